"""What the OpenAI-compatible API speaks: request bodies, errors in OpenAI's shape, and the checks of
fields that need no model (sampling settings, stop sequences, text)."""

# No `from __future__ import annotations`: FastAPI reads the request models' annotations.
from typing import Union

from pydantic import BaseModel, ConfigDict

from rmt.serving.batcher import Settings
from rmt.serving.limits import Limits

MAX_N = 64  # choices per request
MAX_STOP = 4  # stop sequences per request, as OpenAI
OPENAI_COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # /v1/completions default in OpenAI's API
# Below this temperature sampling is greedy decoding (its limit as the temperature goes to 0);
# smaller values overflow logits / temperature in float16/32 (a denormal one gives inf and NaN).
MIN_SAMPLING_TEMPERATURE = 1e-2
SEED_RANGE = (-2**63, 2**63 - 1)  # torch seeds: a signed 64-bit integer


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
