"""An OpenAI-compatible server for any model the toolkit loads (HF causal LMs, RMT checkpoints).

Routes: ``GET /v1/models`` and ``POST /v1/chat/completions`` (non-streaming). Decoding is greedy
(``temperature`` and ``top_p`` are accepted and ignored: the benchmark decodes greedily). A prompt
longer than the model's window is answered with HTTP 400 and ``code: context_length_exceeded``, as
OpenAI does, never truncated.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from contextlib import contextmanager
from typing import Iterator

from pydantic import BaseModel

from rmt.evaluation.base import DEFAULT_MAX_NEW_TOKENS, LocalModel


class ChatMessage(BaseModel):
    role: str
    content: str | list | None = None


class ChatRequest(BaseModel):
    """The fields of an OpenAI chat request that matter here (others are accepted and ignored)."""

    model: str | None = None
    messages: list[ChatMessage]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stream: bool | None = False


def create_app(model: LocalModel, model_id: str | None = None):
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    model_id = model_id or model.name
    lock = threading.Lock()  # one forward pass at a time: torch on CPU is already using every core
    created = int(time.time())

    app = FastAPI(title="rmt serve")

    def error(status: int, message: str, code: str, type_: str = "invalid_request_error"):
        return JSONResponse(status_code=status, content={"error": {"message": message, "type": type_, "code": code}})

    @app.get("/v1/models")
    def list_models():
        return {"object": "list", "data": [{"id": model_id, "object": "model", "created": created, "owned_by": "rmt"}]}

    @app.post("/v1/chat/completions")
    def chat_completions(request: ChatRequest):
        if request.model and request.model != model_id:
            return error(404, f"model {request.model!r} not served here; available: {model_id!r}", "model_not_found")
        if request.stream:
            return error(400, "streaming responses are not supported by rmt serve", "unsupported")
        if not request.messages:
            return error(400, "messages must not be empty", "invalid_messages")
        messages = [{"role": m.role, "content": _text(m.content)} for m in request.messages]
        max_new = request.max_completion_tokens or request.max_tokens or DEFAULT_MAX_NEW_TOKENS
        if max_new < 1:
            return error(400, f"max_tokens must be >= 1, got {max_new}", "invalid_max_tokens")
        ids = model.encode(messages)
        if not model.fits(len(ids), max_new):
            return error(400, f"This model's maximum context length is {model.window} tokens; the request has "
                         f"{len(ids)} prompt tokens and asks for {max_new}.", "context_length_exceeded")
        with lock:
            text = model.generate([ids], max_new)[0]
        completion_tokens = len(model.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model_id,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": len(ids), "completion_tokens": completion_tokens,
                      "total_tokens": len(ids) + completion_tokens},
        }

    return app


def _text(content) -> str:
    """OpenAI content may be a list of parts; keep the text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


def free_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A bound listening socket (port 0: a free one chosen by the OS, no race with other tests)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def make_server(app, sock: socket.socket, max_requests: int | None = None, log_level: str = "warning"):
    import uvicorn

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
          max_requests: int | None = None) -> None:
    """Serve in the foreground until interrupted (or after ``max_requests`` requests)."""
    sock = free_socket(host, port)
    server = make_server(create_app(model, model_id), sock, max_requests, log_level="info")
    bound = sock.getsockname()[1]
    print(f"serving {model_id or model.name} at http://{host}:{bound}/v1", flush=True)
    server.run(sockets=[sock])
