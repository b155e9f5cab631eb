"""An OpenAI-compatible server for any model the toolkit loads (HF causal LMs, RMT checkpoints).

Routes: ``GET /v1/models``, ``POST /v1/chat/completions`` and ``POST /v1/completions`` (what
lm-eval's ``local-chat-completions`` / ``local-completions`` and the official ``openai`` client
send), with ``stream`` (server-sent events), ``n``, ``stop``, ``max_tokens``, ``temperature`` /
``top_p`` / ``seed``. Greedy at ``temperature`` 0 (the benchmark's decoding), sampling above it.

Chat messages go through the tokenizer's chat template when the model uses it
(:attr:`LocalModel.uses_chat_template`; ``rmt serve --no-chat-template`` turns it off), and a
completion ends at the model's end of turn (any of :meth:`LocalModel.eos_ids`, e.g. ``<|im_end|>``),
which is cut off the text; ``finish_reason`` is ``"stop"`` there, ``"length"`` at ``max_tokens``.

Concurrent requests are batched: request handlers run in FastAPI's thread pool and hand their
prompts to one decoding thread (:class:`Batcher`), which takes everything queued while the model was
busy and decodes requests with the same settings together. Streaming sends the completion token by
token once it is decoded (it is not sent while the batch is still decoding).

Every error is in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, with the
status OpenAI uses: malformed JSON and invalid fields 400, unknown model 404, a prompt longer than
the window 400 with ``code: context_length_exceeded`` (never truncated), internal failures 500.
"""

from __future__ import annotations

import json
import queue
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Union

from pydantic import BaseModel, ConfigDict

from rmt.errors import UsageError
from rmt.evaluation.base import DEFAULT_MAX_NEW_TOKENS, LocalModel

MAX_N = 64  # choices per request
MAX_STOP = 4  # stop sequences per request, as OpenAI
OPENAI_COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # /v1/completions default in OpenAI's API


# ----------------------------------------------------------------------------------- requests
class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: Union[str, list, None] = None


class _Sampling(BaseModel):
    """Fields both endpoints share (unknown fields are accepted and ignored, as OpenAI does)."""

    model_config = ConfigDict(extra="allow")
    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = 1
    stop: Union[str, list[str], None] = None
    stream: bool | None = False
    stream_options: dict | None = None
    seed: int | None = None


class ChatRequest(_Sampling):
    messages: list[ChatMessage]
    max_completion_tokens: int | None = None


class CompletionRequest(_Sampling):
    prompt: Union[str, list[str], list[int], list[list[int]]]
    echo: bool | None = False
    logprobs: int | None = None


class APIError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None,
                 type_: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.type = status, message, code, param, type_

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class Settings:
    """What decides how a prompt is decoded; requests with equal settings share a batch."""

    max_new_tokens: int
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None

    def sampling(self) -> dict:
        if not self.do_sample:
            return {}
        return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p, "seed": self.seed}


def settings_for(request: _Sampling, max_new: int) -> Settings:
    if max_new < 1:
        raise APIError(400, f"max_tokens must be >= 1, got {max_new}", "invalid_value", "max_tokens")
    temperature = 1.0 if request.temperature is None else request.temperature
    top_p = 1.0 if request.top_p is None else request.top_p
    if not 0 <= temperature <= 2:
        raise APIError(400, f"temperature must be between 0 and 2, got {temperature}", "invalid_value", "temperature")
    if not 0 < top_p <= 1:
        raise APIError(400, f"top_p must be in (0, 1], got {top_p}", "invalid_value", "top_p")
    n = 1 if request.n is None else request.n
    if not 1 <= n <= MAX_N:
        raise APIError(400, f"n must be between 1 and {MAX_N}, got {n}", "invalid_value", "n")
    # temperature 0 is greedy (the benchmark's decoding); OpenAI's default temperature is 1
    if temperature == 0:
        return Settings(max_new)
    return Settings(max_new, True, temperature, top_p, request.seed)


def stop_list(stop) -> list[str]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    stops = [s for s in stops if s]
    if len(stops) > MAX_STOP:
        raise APIError(400, f"stop takes at most {MAX_STOP} sequences, got {len(stops)}", "invalid_value", "stop")
    return stops


def apply_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """Cut ``text`` at the first stop sequence (which is not returned, as OpenAI does)."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


# ----------------------------------------------------------------------------------- batching
@dataclass
class Job:
    prompts: list[list[int]]  # one entry per choice (a prompt repeated n times)
    settings: Settings
    done: threading.Event = field(default_factory=threading.Event)
    result: list | None = None
    error: BaseException | None = None


class Batcher:
    """One decoding thread: takes every job queued while the model was busy, groups them by
    decoding settings and decodes each group in one ``model.generate_ids`` call (which batches rows
    of similar length under the model's token budget)."""

    def __init__(self, model: LocalModel, max_batch: int = 32):
        self.model, self.max_batch = model, max(1, int(max_batch))
        self.queue: queue.Queue[Job | None] = queue.Queue()
        self.generate_calls = 0  # model.generate_ids calls: tests read it to see batching happen
        self.largest_batch = 0
        self.busy_rows = 0  # prompts being decoded right now
        self.thread = threading.Thread(target=self._run, name="rmt-serve-batcher", daemon=True)
        self.thread.start()

    def submit(self, prompts: list[list[int]], settings: Settings) -> list[tuple[list[int], bool]]:
        job = Job(prompts, settings)
        self.queue.put(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join(timeout=10)

    def _take(self) -> list[Job] | None:
        first = self.queue.get()
        if first is None:
            return None
        jobs, rows = [first], len(first.prompts)
        while rows < self.max_batch:
            try:
                job = self.queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                self.queue.put(None)  # stop after this round
                break
            jobs.append(job)
            rows += len(job.prompts)
        return jobs

    def _run(self) -> None:
        while True:
            jobs = self._take()
            if jobs is None:
                return
            groups: dict = {}
            for job in jobs:
                # A seeded sampling request is decoded on its own, so its seed alone decides its tokens.
                key = (job.settings, id(job)) if job.settings.seed is not None else job.settings
                groups.setdefault(key, []).append(job)
            for group in groups.values():
                settings = group[0].settings
                prompts = [p for job in group for p in job.prompts]
                try:
                    self.generate_calls += 1
                    self.largest_batch = max(self.largest_batch, len(prompts))
                    self.busy_rows = len(prompts)
                    out = self.model.generate_ids(prompts, settings.max_new_tokens, **settings.sampling())
                except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
                    for job in group:
                        job.error = exc
                        job.done.set()
                    continue
                finally:
                    self.busy_rows = 0
                start = 0
                for job in group:
                    job.result = out[start:start + len(job.prompts)]
                    start += len(job.prompts)
                    job.done.set()


# ----------------------------------------------------------------------------------- the app
def _text(content) -> str:
    """OpenAI content may be a list of parts; keep the text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


def _validation_message(errors) -> tuple[str, str | None]:
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        return f"the request body is not valid JSON ({first.get('ctx', {}).get('error', 'parse error')})", None
    loc = [str(x) for x in first.get("loc", []) if x != "body"]
    param = ".".join(loc) or None
    return (f"invalid request: {param}: {first.get('msg', 'invalid value')}" if param
            else f"invalid request: {first.get('msg', 'invalid body')}"), param


def create_app(model: LocalModel, model_id: str | None = None, max_batch: int = 32):
    from fastapi import FastAPI, Request  # lazy: the `serve` extra (fastapi, uvicorn)
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    model_id = model_id or model.name
    created = int(time.time())
    batcher = Batcher(model, max_batch)
    app = FastAPI(title="rmt serve")
    app.state.batcher = batcher
    app.router.on_shutdown.append(batcher.close)

    @app.exception_handler(APIError)
    def _api_error(request: Request, exc: APIError):
        return JSONResponse(status_code=exc.status, content=exc.body())

    @app.exception_handler(RequestValidationError)
    def _invalid(request: Request, exc: RequestValidationError):
        message, param = _validation_message(exc.errors())
        return JSONResponse(status_code=400, content=APIError(400, message, "invalid_request", param).body())

    @app.exception_handler(StarletteHTTPException)
    def _http(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        message = f"{request.method} {request.url.path}: {exc.detail}"
        type_ = "server_error" if exc.status_code >= 500 else "invalid_request_error"
        return JSONResponse(status_code=exc.status_code, content=APIError(exc.status_code, message, code, None, type_).body())

    @app.exception_handler(Exception)
    def _internal(request: Request, exc: Exception):
        first = (str(exc).strip().splitlines() or [""])[0]
        return JSONResponse(status_code=500, content=APIError(
            500, f"internal error: {type(exc).__name__}: {first}", "internal_error", None, "server_error").body())

    def check_model(name: str | None) -> None:
        if name and name != model_id:
            raise APIError(404, f"model {name!r} not served here; available: {model_id!r}", "model_not_found", "model")

    def fit(ids: list[int], max_new: int) -> None:
        if not model.fits(len(ids), max_new):
            raise APIError(400, f"This model's maximum context length is {model.window} tokens; the request has "
                           f"{len(ids)} prompt tokens and asks for {max_new}.", "context_length_exceeded", "messages")

    def decode_choices(outputs, stops: list[str], max_new: int, prefix: str = ""):
        """(text, finish_reason, completion token ids) per output."""
        choices = []
        for ids, hit_eos in outputs:
            text, stopped = apply_stop(model.decode(ids), stops)
            reason = "stop" if hit_eos or stopped or len(ids) < max_new else "length"
            choices.append((prefix + text, reason, ids))
        return choices

    def usage(prompt_tokens: int, choices) -> dict:
        completion = sum(len(ids) for _, _, ids in choices)
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion}

    def pieces(text: str) -> list[str]:
        """The completion split at token boundaries, for streaming."""
        ids = model.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
        out, done = [], ""
        for k in range(1, len(ids) + 1):
            now = model.tokenizer.decode(ids[:k], skip_special_tokens=True)
            if now.startswith(done) and len(now) > len(done) and not now.endswith("\ufffd"):
                out.append(now[len(done):])
                done = now
        if done != text:
            out.append(text[len(done):] if text.startswith(done) else text)
        return out

    def sse(events: Iterator[dict]):
        for event in events:
            yield f"data: {json.dumps(event, ensure_ascii=False)}\n\n"
        yield "data: [DONE]\n\n"

    @app.get("/v1/models")
    def list_models():
        return {"object": "list", "data": [{"id": model_id, "object": "model", "created": created, "owned_by": "rmt"}]}

    @app.get("/v1/models/{name:path}")
    def get_model(name: str):
        check_model(name)
        return {"id": model_id, "object": "model", "created": created, "owned_by": "rmt"}

    @app.post("/v1/chat/completions")
    def chat_completions(request: ChatRequest):
        check_model(request.model)
        if not request.messages:
            raise APIError(400, "messages must not be empty", "invalid_value", "messages")
        for i, m in enumerate(request.messages):
            if not _text(m.content).strip():
                raise APIError(400, f"messages[{i}].content is empty (got {m.content!r}); every message needs text",
                               "invalid_value", f"messages[{i}].content")
        messages = [{"role": m.role, "content": _text(m.content)} for m in request.messages]
        max_new = next((v for v in (request.max_completion_tokens, request.max_tokens) if v is not None),
                       DEFAULT_MAX_NEW_TOKENS)
        settings = settings_for(request, max_new)
        stops = stop_list(request.stop)
        ids = model.encode(messages)
        fit(ids, max_new)
        choices = decode_choices(batcher.submit([ids] * (request.n or 1), settings), stops, max_new)
        cid, now = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        if not request.stream:
            return {"id": cid, "object": "chat.completion", "created": now, "model": model_id,
                    "choices": [{"index": i, "message": {"role": "assistant", "content": text},
                                 "logprobs": None, "finish_reason": reason}
                                for i, (text, reason, _) in enumerate(choices)],
                    "usage": usage(len(ids), choices)}

        def events():
            base = {"id": cid, "object": "chat.completion.chunk", "created": now, "model": model_id}
            for i, (text, reason, _) in enumerate(choices):
                yield {**base, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""},
                                            "logprobs": None, "finish_reason": None}]}
                for piece in pieces(text):
                    yield {**base, "choices": [{"index": i, "delta": {"content": piece}, "logprobs": None,
                                                "finish_reason": None}]}
                yield {**base, "choices": [{"index": i, "delta": {}, "logprobs": None, "finish_reason": reason}]}
            if (request.stream_options or {}).get("include_usage"):
                yield {**base, "choices": [], "usage": usage(len(ids), choices)}

        return StreamingResponse(sse(events()), media_type="text/event-stream")

    @app.post("/v1/completions")
    def completions(request: CompletionRequest):
        check_model(request.model)
        if request.logprobs is not None:
            raise APIError(400, "logprobs are not supported by rmt serve (generation only)", "unsupported", "logprobs")
        prompt = request.prompt
        if isinstance(prompt, str) or (prompt and all(isinstance(x, int) for x in prompt)):
            prompt = [prompt]  # one prompt: text, or token ids
        if not prompt:
            raise APIError(400, "prompt must not be empty", "invalid_value", "prompt")
        max_new = OPENAI_COMPLETIONS_DEFAULT_MAX_TOKENS if request.max_tokens is None else request.max_tokens
        settings = settings_for(request, max_new)
        stops = stop_list(request.stop)
        n = request.n or 1
        encoded, texts = [], []
        for i, p in enumerate(prompt):
            if isinstance(p, str):
                if not p.strip():
                    raise APIError(400, f"prompt[{i}] is empty (got {p!r})", "invalid_value", "prompt")
                ids = model.encode(p)
                texts.append(p)
            else:
                vocab = len(model.tokenizer)
                if not p or any(not 0 <= t < vocab for t in p):
                    raise APIError(400, f"prompt[{i}] must be a non-empty list of token ids in 0..{vocab - 1}",
                                   "invalid_value", "prompt")
                ids = list(p)
                texts.append(model.decode(ids))
            fit(ids, max_new)
            encoded.append(ids)
        outputs = batcher.submit([ids for ids in encoded for _ in range(n)], settings)
        choices = []
        for k, ids in enumerate(encoded):
            prefix = texts[k] if request.echo else ""
            choices.extend(decode_choices(outputs[k * n:(k + 1) * n], stops, max_new, prefix))
        prompt_tokens = sum(len(ids) for ids in encoded)
        cid, now = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        if not request.stream:
            return {"id": cid, "object": "text_completion", "created": now, "model": model_id,
                    "choices": [{"index": i, "text": text, "logprobs": None, "finish_reason": reason}
                                for i, (text, reason, _) in enumerate(choices)],
                    "usage": usage(prompt_tokens, choices)}

        def events():
            base = {"id": cid, "object": "text_completion", "created": now, "model": model_id}
            for i, (text, reason, _) in enumerate(choices):
                for piece in pieces(text):
                    yield {**base, "choices": [{"index": i, "text": piece, "logprobs": None, "finish_reason": None}]}
                yield {**base, "choices": [{"index": i, "text": "", "logprobs": None, "finish_reason": reason}]}
            if (request.stream_options or {}).get("include_usage"):
                yield {**base, "choices": [], "usage": usage(prompt_tokens, choices)}

        return StreamingResponse(sse(events()), media_type="text/event-stream")

    return app


# ----------------------------------------------------------------------------------- running
def free_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A bound listening socket (port 0: a free one chosen by the OS, no race with other tests)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def make_server(app, sock: socket.socket, max_requests: int | None = None, log_level: str = "warning"):
    import uvicorn  # lazy: the `serve` extra

    config = uvicorn.Config(app, log_level=log_level, limit_max_requests=max_requests,
                            timeout_graceful_shutdown=5)
    return uvicorn.Server(config)


@contextmanager
def serve_in_thread(app, host: str = "127.0.0.1", max_requests: int | None = None) -> Iterator[str]:
    """Run ``app`` on a free loopback port in a background thread; yields the base URL (``.../v1``)."""
    sock = free_socket(host, 0)
    server = make_server(app, sock, max_requests)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def serve(model: LocalModel, host: str = "127.0.0.1", port: int = 8000, model_id: str | None = None,
          max_requests: int | None = None, max_batch: int = 32) -> None:
    """Serve in the foreground until interrupted (or after ``max_requests`` requests)."""
    sock = free_socket(host, port)
    server = make_server(create_app(model, model_id, max_batch), sock, max_requests, log_level="info")
    bound = sock.getsockname()[1]
    print(f"serving {model_id or model.name} at http://{host}:{bound}/v1 "
          f"(POST /chat/completions, /completions; GET /models)", flush=True)
    server.run(sockets=[sock])
