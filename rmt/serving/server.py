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

Layout: :mod:`rmt.serving.protocol` (request bodies, :class:`APIError`, field checks),
:mod:`rmt.serving.state` (:class:`AppState`: what the routes share), :mod:`rmt.serving.handlers`
(the error handlers), and the routes by resource: :mod:`rmt.serving.routes_models`,
:mod:`rmt.serving.routes_chat`, :mod:`rmt.serving.routes_completions`.
"""

import socket
import sys
import threading
import time
from contextlib import contextmanager
from typing import Iterator

from rmt.errors import UsageError
from rmt.evaluation.base import LocalModel
from rmt.serving.access import APIKeyMiddleware, exposure_warning
from rmt.serving.batcher import Batcher, Settings
from rmt.serving.limits import Limits
from rmt.serving.protocol import (  # noqa: F401 (the API's vocabulary, importable from here as before)
    MAX_N, MAX_STOP, MIN_SAMPLING_TEMPERATURE, OPENAI_COMPLETIONS_DEFAULT_MAX_TOKENS, SEED_RANGE, APIError,
    ChatMessage, ChatRequest, CompletionRequest, apply_stop, check_text, settings_for, stop_list)
from rmt.serving.state import AppState

__all__ = ["APIError", "AppState", "Batcher", "Limits", "Settings", "create_app", "serve", "serve_in_thread"]

SHUTDOWN_GRACE_S = 1  # seconds uvicorn waits for open requests after decoding stopped


def create_app(model: LocalModel, model_id: str | None = None, max_batch: int | None = None,
               limits: Limits | None = None, api_key: str | None = None):
    """The FastAPI app serving ``model`` as ``model_id``, within ``limits``; with ``api_key``, every
    route but ``/health`` needs ``Authorization: Bearer API_KEY``. ``max_batch`` overrides
    ``limits.max_batch`` (its older spelling)."""
    from dataclasses import replace

    from fastapi import FastAPI  # lazy: the `serve` extra (fastapi, uvicorn)

    from rmt.serving import routes_chat, routes_completions, routes_models
    from rmt.serving.handlers import register_error_handlers

    limits = limits or Limits()
    if max_batch is not None:
        limits = replace(limits, max_batch=max_batch)
    state = AppState.build(model, model_id or model.name, limits)
    app = FastAPI(title="rmt serve")
    app.state.batcher, app.state.limits = state.batcher, limits
    app.router.on_shutdown.append(state.batcher.close)
    if api_key:
        app.add_middleware(APIKeyMiddleware, api_key=api_key)
    register_error_handlers(app)
    for routes in (routes_models, routes_chat, routes_completions):
        routes.register(app, state)
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
