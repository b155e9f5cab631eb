"""What one request, and the queue, may ask of ``rmt serve``: one definition, read by the server
and by the CLI's option defaults (no web framework imported here)."""

from __future__ import annotations

from dataclasses import dataclass

from rmt.errors import UsageError


@dataclass(frozen=True)
class Limits:
    """What one request, and the queue, may ask of the server (``rmt serve --max-tokens-limit``,
    ``--max-prompt-tokens``, ``--max-request-prompts``, ``--max-queue``, ``--max-batch-size``)."""

    max_tokens: int = 2048  # new tokens per completion, every model kind (an RMT has no window to bound it)
    # Prompt tokens per prompt, every model kind: a memory model (RMT) has no window, so without this
    # one request could ask it to read any length (a million tokens: half an hour of a 2-core CPU).
    # 128k by default (a few minutes of smollm2-135m with memory on such a CPU); a windowed model is
    # bounded by its window as well. More is a 400 (code context_length_exceeded).
    max_prompt_tokens: int = 131072
    max_request_prompts: int = 256  # prompts x n in one request
    max_queue: int = 64  # requests waiting or decoding; more get 429
    max_batch: int = 32  # rows in one model.generate_ids call
    # The short decoding lane takes jobs of at most short_max_tokens new tokens per row and
    # short_job_tokens prompt + new tokens in all; the rest (a maximal request) go to the long lane.
    short_max_tokens: int = 256
    short_job_tokens: int = 8192

    def __post_init__(self):
        for name in ("max_tokens", "max_prompt_tokens", "max_request_prompts", "max_queue", "max_batch", "short_max_tokens",
                     "short_job_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise UsageError(f"{name} must be an integer >= 1, got {value!r}")
