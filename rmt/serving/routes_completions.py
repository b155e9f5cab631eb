"""``POST /v1/completions``: prompts (text or token ids) -> choices, whole or streamed."""

# No `from __future__ import annotations`: FastAPI reads the route's annotations.
import time
import uuid

from fastapi import Request  # imported only by create_app: the `serve` extra (fastapi, uvicorn)
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from rmt.serving.protocol import (OPENAI_COMPLETIONS_DEFAULT_MAX_TOKENS, APIError, CompletionRequest, check_text,
                                  settings_for, stop_list)
from rmt.serving.state import AppState, sse, usage


def encode_prompts(state: AppState, prompt: list, max_new: int):
    """Token ids and text of every prompt, each checked to fit."""
    model = state.model
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
        state.fit(ids, max_new, "prompt")
        encoded.append(ids)
    return encoded, texts


def prepare_completion(state: AppState, request: CompletionRequest):
    state.check_model(request.model)
    if request.logprobs is not None:
        raise APIError(400, "logprobs are not supported by rmt serve (generation only)", "unsupported", "logprobs")
    prompt = request.prompt
    if isinstance(prompt, str) or (prompt and all(isinstance(x, int) for x in prompt)):
        prompt = [prompt]  # one prompt: text, or token ids
    if not prompt:
        raise APIError(400, "prompt must not be empty", "invalid_value", "prompt")
    max_new = OPENAI_COMPLETIONS_DEFAULT_MAX_TOKENS if request.max_tokens is None else request.max_tokens
    settings = settings_for(request, max_new, state.limits.max_tokens)
    stops = stop_list(request.stop)
    n = request.n or 1
    state.check_rows(len(prompt) * n, f"{len(prompt)} prompt(s) x n={n}", "prompt")
    encoded, texts = encode_prompts(state, prompt, max_new)
    return encoded, texts, settings, stops, max_new, n


def answer_completion(state: AppState, request: CompletionRequest, encoded, texts, outputs, stops, max_new, n):
    choices = []
    for k, ids in enumerate(encoded):
        prefix = texts[k] if request.echo else ""
        choices.extend(state.decode_choices(outputs[k * n:(k + 1) * n], stops, max_new, prefix))
    prompt_tokens = sum(len(ids) for ids in encoded)
    cid, now = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    if not request.stream:
        return {"id": cid, "object": "text_completion", "created": now, "model": state.model_id,
                "choices": [{"index": i, "text": text, "logprobs": None, "finish_reason": reason}
                            for i, (text, reason, _) in enumerate(choices)],
                "usage": usage(prompt_tokens, choices)}

    def events():
        base = {"id": cid, "object": "text_completion", "created": now, "model": state.model_id}
        for i, (text, reason, _) in enumerate(choices):
            for piece in state.pieces(text):
                yield {**base, "choices": [{"index": i, "text": piece, "logprobs": None, "finish_reason": None}]}
            yield {**base, "choices": [{"index": i, "text": "", "logprobs": None, "finish_reason": reason}]}
        if (request.stream_options or {}).get("include_usage"):
            yield {**base, "choices": [], "usage": usage(prompt_tokens, choices)}

    return StreamingResponse(sse(events()), media_type="text/event-stream")


def register(app, state: AppState) -> None:
    @app.post("/v1/completions")
    async def completions(request: CompletionRequest, raw: Request):
        encoded, texts, settings, stops, max_new, n = await run_in_threadpool(prepare_completion, state, request)
        outputs = await state.decode(raw, [ids for ids in encoded for _ in range(n)], settings)
        return await run_in_threadpool(answer_completion, state, request, encoded, texts, outputs, stops, max_new, n)
