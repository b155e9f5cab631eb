"""``POST /v1/chat/completions``: messages (through the chat template when the model uses one) ->
choices, whole or streamed."""

# No `from __future__ import annotations`: FastAPI reads the route's annotations.
import time
import uuid

from fastapi import Request  # imported only by create_app: the `serve` extra (fastapi, uvicorn)
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from rmt.evaluation.base import DEFAULT_MAX_NEW_TOKENS
from rmt.serving.protocol import APIError, ChatRequest, _text, check_text, settings_for, stop_list
from rmt.serving.state import AppState, sse, usage


def prepare_chat(state: AppState, request: ChatRequest):
    state.check_model(request.model)
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
    settings = settings_for(request, max_new, state.limits.max_tokens)
    stops = stop_list(request.stop)
    state.check_rows(request.n or 1, f"n={request.n}", "n")
    ids = state.encode_messages(messages)
    state.fit(ids, max_new)
    return ids, settings, stops, max_new


def answer_chat(state: AppState, request: ChatRequest, ids, outputs, stops, max_new):
    choices = state.decode_choices(outputs, stops, max_new)
    cid, now = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    if not request.stream:
        return {"id": cid, "object": "chat.completion", "created": now, "model": state.model_id,
                "choices": [{"index": i, "message": {"role": "assistant", "content": text},
                             "logprobs": None, "finish_reason": reason}
                            for i, (text, reason, _) in enumerate(choices)],
                "usage": usage(len(ids), choices)}

    def events():
        base = {"id": cid, "object": "chat.completion.chunk", "created": now, "model": state.model_id}
        for i, (text, reason, _) in enumerate(choices):
            yield {**base, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""},
                                        "logprobs": None, "finish_reason": None}]}
            for piece in state.pieces(text):
                yield {**base, "choices": [{"index": i, "delta": {"content": piece}, "logprobs": None,
                                            "finish_reason": None}]}
            yield {**base, "choices": [{"index": i, "delta": {}, "logprobs": None, "finish_reason": reason}]}
        if (request.stream_options or {}).get("include_usage"):
            yield {**base, "choices": [], "usage": usage(len(ids), choices)}

    return StreamingResponse(sse(events()), media_type="text/event-stream")


def register(app, state: AppState) -> None:
    @app.post("/v1/chat/completions")
    async def chat_completions(request: ChatRequest, raw: Request):
        ids, settings, stops, max_new = await run_in_threadpool(prepare_chat, state, request)
        outputs = await state.decode(raw, [ids] * (request.n or 1), settings)
        return await run_in_threadpool(answer_chat, state, request, ids, outputs, stops, max_new)
