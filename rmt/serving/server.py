"""An OpenAI-compatible server for any model the toolkit loads (HF causal LMs, RMT checkpoints).

Routes: ``GET /v1/models``, ``POST /v1/chat/completions`` and ``POST /v1/completions`` (what
lm-eval's ``local-chat-completions`` / ``local-completions`` and the official ``openai`` client
send), with ``stream`` (server-sent events), ``n``, ``stop``, ``max_tokens``, ``temperature`` /
``top_p`` / ``seed``; ``GET /health`` for supervisors. Greedy at ``temperature`` 0 (the benchmark's
decoding), sampling above it.

Chat messages go through the tokenizer's chat template when the model uses it
(:attr:`LocalModel.uses_chat_template`; ``rmt serve --no-chat-template`` turns it off), and a
completion ends at the model's end of turn (any of :meth:`LocalModel.eos_ids`, e.g. ``<|im_end|>``),
which is cut off the text; ``finish_reason`` is ``"stop"`` there, ``"length"`` at ``max_tokens``.

Limits and isolation (:class:`Limits`): ``max_tokens`` is capped for every model kind, as are the
prompts x ``n`` of one request and the requests waiting or decoding (429 beyond). Handlers run on
the event loop and wait for their job without holding a worker thread, so ``/health`` and
``/v1/models`` answer at once however much is queued; a client that disconnects cancels its job,
and decoding checks for that between decode steps (:mod:`rmt.serving.batcher`: two decoding lanes,
so small requests complete beside a maximal one). Shutdown stops decoding at the next step.

Every error is in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``: a client error
is a 4xx (malformed JSON and invalid or unsupported fields 400, a missing or wrong API key 401,
unknown model 404, a prompt longer than the window, or than ``--max-prompt-tokens`` (128k by default:
a memory model has no window), 400 with ``code: context_length_exceeded``, never truncated, a full
queue 429); 503 while shutting down; 500 only for a failure inside the server.
"""

# No `from __future__ import annotations`: FastAPI reads the route functions' annotations, and
# `Request` is imported inside create_app (fastapi is an extra), so they must be objects, not names.
import asyncio
import json
import socket
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from typing import Iterator, Union

from pydantic import BaseModel, ConfigDict

from rmt.errors import UsageError
from rmt.evaluation.base import DEFAULT_MAX_NEW_TOKENS, LocalModel
from rmt.serving.access import APIKeyMiddleware, exposure_warning
from rmt.serving.batcher import Batcher, Cancelled, Job, QueueFull, Settings, Stopping
from rmt.serving.limits import Limits

__all__ = ["APIError", "Batcher", "Limits", "Settings", "create_app", "serve", "serve_in_thread"]

MAX_N = 64  # choices per request
MAX_STOP = 4  # stop sequences per request, as OpenAI
OPENAI_COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # /v1/completions default in OpenAI's API
# Below this temperature sampling is greedy decoding (its limit as the temperature goes to 0);
# smaller values overflow logits / temperature in float16/32 (a denormal one gives inf and NaN).
MIN_SAMPLING_TEMPERATURE = 1e-2
SEED_RANGE = (-2**63, 2**63 - 1)  # torch seeds: a signed 64-bit integer
DISCONNECT_POLL_S = 0.2  # how often a waiting handler looks whether its client is still there
SHUTDOWN_GRACE_S = 1  # seconds uvicorn waits for open requests after decoding stopped


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
    logprobs: bool | None = None  # not offered: true is a 400 (never a silent 200 without them)
    top_logprobs: int | None = None


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


def settings_for(request: _Sampling, max_new: int, max_tokens_limit: int = Limits.max_tokens) -> Settings:
    if max_new < 1:
        raise APIError(400, f"max_tokens must be >= 1, got {max_new}", "invalid_value", "max_tokens")
    if max_new > max_tokens_limit:
        raise APIError(400, f"max_tokens must be at most {max_tokens_limit} on this server, got {max_new} "
                       "(rmt serve --max-tokens-limit sets the cap)", "invalid_value", "max_tokens")
    if request.seed is not None and not SEED_RANGE[0] <= request.seed <= SEED_RANGE[1]:
        raise APIError(400, f"seed must be a 64-bit signed integer ({SEED_RANGE[0]}..{SEED_RANGE[1]}), "
                       f"got {request.seed}", "invalid_value", "seed")
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
    if temperature < MIN_SAMPLING_TEMPERATURE:
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


# ----------------------------------------------------------------------------------- the app
def check_text(text: str, param: str) -> str:
    """``text`` can be tokenized: JSON may carry lone surrogates (``"\\ud800"``), which are not text."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise APIError(400, f"{param} is not valid text: {exc.reason} at character {exc.start}",
                       "invalid_value", param) from None
    return text


def _text(content, param: str = "content") -> str:
    """A message's text: a string, or OpenAI's list of parts, of which only text parts
    (``{"type": "text", "text": "..."}``) are taken: the models read text only."""
    if content is None:
        return ""
    if isinstance(content, str):
        return check_text(content, param)
    texts = []
    for j, part in enumerate(content):
        where = f"{param}[{j}]"
        if not isinstance(part, dict) or part.get("type", "text") != "text":
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise APIError(400, f"{where} is a {kind!r} part; rmt serve takes text parts only "
                           '({"type": "text", "text": "..."})', "invalid_value", where)
        if not isinstance(part.get("text"), str):
            raise APIError(400, f"{where}.text must be a string, got {part.get('text')!r}", "invalid_value",
                           f"{where}.text")
        texts.append(check_text(part["text"], f"{where}.text"))
    return "".join(texts)


def _validation_message(errors) -> tuple[str, str | None]:
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        return f"the request body is not valid JSON ({first.get('ctx', {}).get('error', 'parse error')})", None
    loc = [str(x) for x in first.get("loc", []) if x != "body"]
    param = ".".join(loc) or None
    return (f"invalid request: {param}: {first.get('msg', 'invalid value')}" if param
            else f"invalid request: {first.get('msg', 'invalid body')}"), param


def create_app(model: LocalModel, model_id: str | None = None, max_batch: int | None = None,
               limits: Limits | None = None, api_key: str | None = None):
    """The FastAPI app serving ``model`` as ``model_id``, within ``limits``; with ``api_key``, every
    route but ``/health`` needs ``Authorization: Bearer API_KEY``. ``max_batch`` overrides
    ``limits.max_batch`` (its older spelling)."""
    from dataclasses import replace

    from fastapi import FastAPI, Request  # lazy: the `serve` extra (fastapi, uvicorn)
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException

    limits = limits or Limits()
    if max_batch is not None:
        limits = replace(limits, max_batch=max_batch)
    model_id = model_id or model.name
    created = int(time.time())
    batcher = Batcher(model, limits.max_batch, limits.max_queue, limits.short_max_tokens, limits.short_job_tokens)
    app = FastAPI(title="rmt serve")
    app.state.batcher, app.state.limits = batcher, limits
    app.router.on_shutdown.append(batcher.close)
    if api_key:
        app.add_middleware(APIKeyMiddleware, api_key=api_key)

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

    def check_rows(rows: int, what: str, param: str) -> None:
        if rows > limits.max_request_prompts:
            raise APIError(400, f"{what} asks for {rows} completions; this server takes at most "
                           f"{limits.max_request_prompts} per request (rmt serve --max-request-prompts)",
                           "invalid_value", param)

    def fit(ids: list[int], max_new: int, param: str = "messages") -> None:
        if len(ids) > limits.max_prompt_tokens:
            raise APIError(400, f"the prompt has {len(ids)} tokens; this server takes at most "
                           f"{limits.max_prompt_tokens} prompt tokens per prompt (rmt serve --max-prompt-tokens)",
                           "context_length_exceeded", param)
        if not model.fits(len(ids), max_new):
            raise APIError(400, f"This model's maximum context length is {model.window} tokens; the request has "
                           f"{len(ids)} prompt tokens and asks for {max_new}.", "context_length_exceeded", param)

    def encode_messages(messages: list[dict]) -> list[int]:
        try:
            return model.encode(messages)
        except Exception as exc:  # the chat template refused the messages (its raise_exception, a missing key)
            from jinja2 import TemplateError

            if isinstance(exc, TemplateError):
                raise APIError(400, f"the model's chat template rejected the messages: {exc}", "invalid_value",
                               "messages") from None
            raise

    async def decode(request: Request, prompts: list[list[int]], settings: Settings):
        """Queue ``prompts`` and wait (on the event loop, no worker thread held) for their ids; the
        job is cancelled when the client goes away or the handler is cancelled."""
        loop = asyncio.get_running_loop()
        finished = loop.create_future()

        def on_done():
            loop.call_soon_threadsafe(lambda: finished.done() or finished.set_result(None))

        job = Job(prompts, settings, on_done=on_done)
        try:
            batcher.put(job)
        except QueueFull:
            raise APIError(429, f"the server is busy: {limits.max_queue} requests are waiting or decoding "
                           "(rmt serve --max-queue); retry later", "queue_full", None, "requests") from None
        except Stopping:
            raise APIError(503, "the server is shutting down", "shutting_down", None, "server_error") from None
        try:
            while not finished.done():
                try:
                    await asyncio.wait_for(asyncio.shield(finished), DISCONNECT_POLL_S)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        job.cancel()
                        raise APIError(499, "the client closed the request", "client_closed_request") from None
        except BaseException:
            job.cancel()
            raise
        if isinstance(job.error, Stopping):
            raise APIError(503, "the server is shutting down", "shutting_down", None, "server_error")
        if isinstance(job.error, Cancelled):
            raise APIError(499, "the client closed the request", "client_closed_request")
        if isinstance(job.error, ValueError):
            # the model refuses a setting before decoding (top_p on an RMT, sampling on a last-window model)
            raise APIError(400, f"unsupported by this model: {job.error}", "unsupported_value")
        if job.error is not None:
            raise job.error
        return job.result

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

    # Routes that never touch the model are async: they run on the event loop, never behind
    # generation or the worker threads.
    @app.get("/health")
    async def health():
        """Liveness and what is in flight: requests pending (waiting or decoding), and the server's
        asyncio tasks and Python threads (the worker pool's idle threads counted apart: a bounded
        cache, pruned on later requests), so a soak (bench/soak.py) can tell that nothing is left behind."""
        pool = sum(1 for t in threading.enumerate() if t.name == "AnyIO worker thread")
        return {"status": "ok", "model": model_id, "pending": batcher.pending, "max_queue": limits.max_queue,
                "decoding_rows": batcher.busy_rows, "cancelled_jobs": batcher.cancelled_jobs,
                "tasks": len(asyncio.all_tasks()),
                "threads": threading.active_count() - pool, "worker_threads": pool}

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [{"id": model_id, "object": "model", "created": created, "owned_by": "rmt"}]}

    @app.get("/v1/models/{name:path}")
    async def get_model(name: str):
        check_model(name)
        return {"id": model_id, "object": "model", "created": created, "owned_by": "rmt"}

    def prepare_chat(request: ChatRequest):
        check_model(request.model)
        if request.logprobs or request.top_logprobs is not None:
            param = "logprobs" if request.logprobs else "top_logprobs"
            raise APIError(400, "logprobs are not supported by rmt serve (generation only)", "unsupported", param)
        if not request.messages:
            raise APIError(400, "messages must not be empty", "invalid_value", "messages")
        messages = []
        for i, m in enumerate(request.messages):
            text = _text(m.content, f"messages[{i}].content")
            if not text.strip():
                raise APIError(400, f"messages[{i}].content is empty (got {m.content!r}); every message needs text",
                               "invalid_value", f"messages[{i}].content")
            messages.append({"role": check_text(m.role, f"messages[{i}].role"), "content": text})
        max_new = next((v for v in (request.max_completion_tokens, request.max_tokens) if v is not None),
                       DEFAULT_MAX_NEW_TOKENS)
        settings = settings_for(request, max_new, limits.max_tokens)
        stops = stop_list(request.stop)
        check_rows(request.n or 1, f"n={request.n}", "n")
        ids = encode_messages(messages)
        fit(ids, max_new)
        return ids, settings, stops, max_new

    def answer_chat(request: ChatRequest, ids, outputs, stops, max_new):
        choices = decode_choices(outputs, stops, max_new)
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

    @app.post("/v1/chat/completions")
    async def chat_completions(request: ChatRequest, raw: Request):
        ids, settings, stops, max_new = await run_in_threadpool(prepare_chat, request)
        outputs = await decode(raw, [ids] * (request.n or 1), settings)
        return await run_in_threadpool(answer_chat, request, ids, outputs, stops, max_new)

    def prepare_completion(request: CompletionRequest):
        check_model(request.model)
        if request.logprobs is not None:
            raise APIError(400, "logprobs are not supported by rmt serve (generation only)", "unsupported", "logprobs")
        prompt = request.prompt
        if isinstance(prompt, str) or (prompt and all(isinstance(x, int) for x in prompt)):
            prompt = [prompt]  # one prompt: text, or token ids
        if not prompt:
            raise APIError(400, "prompt must not be empty", "invalid_value", "prompt")
        max_new = OPENAI_COMPLETIONS_DEFAULT_MAX_TOKENS if request.max_tokens is None else request.max_tokens
        settings = settings_for(request, max_new, limits.max_tokens)
        stops = stop_list(request.stop)
        n = request.n or 1
        check_rows(len(prompt) * n, f"{len(prompt)} prompt(s) x n={n}", "prompt")
        encoded, texts = [], []
        for i, p in enumerate(prompt):
            if isinstance(p, str):
                if not p.strip():
                    raise APIError(400, f"prompt[{i}] is empty (got {p!r})", "invalid_value", "prompt")
                ids = model.encode(check_text(p, f"prompt[{i}]"))
                texts.append(p)
            else:
                vocab = len(model.tokenizer)
                if not p or any(not 0 <= t < vocab for t in p):
                    raise APIError(400, f"prompt[{i}] must be a non-empty list of token ids in 0..{vocab - 1}",
                                   "invalid_value", "prompt")
                ids = list(p)
                texts.append(model.decode(ids))
            fit(ids, max_new, "prompt")
            encoded.append(ids)
        return encoded, texts, settings, stops, max_new, n

    def answer_completion(request: CompletionRequest, encoded, texts, outputs, stops, max_new, n):
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

    @app.post("/v1/completions")
    async def completions(request: CompletionRequest, raw: Request):
        encoded, texts, settings, stops, max_new, n = await run_in_threadpool(prepare_completion, request)
        outputs = await decode(raw, [ids for ids in encoded for _ in range(n)], settings)
        return await run_in_threadpool(answer_completion, request, encoded, texts, outputs, stops, max_new, n)

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
    """A uvicorn server for ``app`` that, on shutdown (SIGINT/SIGTERM, ``should_exit``), first stops
    decoding (running batches end at their next step, queued requests get 503) and then gives open
    requests :data:`SHUTDOWN_GRACE_S` to finish: it exits in about a second, whatever is decoding."""
    import uvicorn  # lazy: the `serve` extra

    class Server(uvicorn.Server):
        async def shutdown(self, sockets=None):
            batcher = getattr(app.state, "batcher", None)
            if batcher is not None:
                batcher.stop()
            await super().shutdown(sockets)

    config = uvicorn.Config(app, log_level=log_level, limit_max_requests=max_requests,
                            timeout_graceful_shutdown=SHUTDOWN_GRACE_S)
    return Server(config)


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
          max_requests: int | None = None, max_batch: int | None = None, limits: Limits | None = None,
          api_key: str | None = None) -> None:
    """Serve in the foreground until interrupted (or after ``max_requests`` requests)."""
    sock = free_socket(host, port)
    server = make_server(create_app(model, model_id, max_batch, limits, api_key), sock, max_requests,
                         log_level="info")
    sock.listen(2048)  # uvicorn's backlog: connections made once the URL is printed wait, never refused
    bound = sock.getsockname()[1]
    warning = exposure_warning(host, api_key)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    print(f"serving {model_id or model.name} at http://{host}:{bound}/v1 "
          f"(POST /chat/completions, /completions; GET /models; GET /health"
          f"{'; API key required' if api_key else ''})", flush=True)
    server.run(sockets=[sock])
