"""What every route of one app shares: the model and its id, the limits, the batcher, and the checks
and helpers that need them (model name, prompt sizes, queueing a job and waiting for it, choices,
usage, streaming pieces)."""

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Iterator

from rmt.evaluation.base import LocalModel
from rmt.serving.batcher import Batcher, Cancelled, Job, QueueFull, Settings, Stopping
from rmt.serving.limits import Limits
from rmt.serving.protocol import APIError, apply_stop

DISCONNECT_POLL_S = 0.2  # how often a waiting handler looks whether its client is still there


@dataclass
class AppState:
    """One served model: ``model`` answered as ``model_id`` within ``limits`` through ``batcher``."""

    model: LocalModel
    model_id: str
    limits: Limits
    batcher: Batcher
    created: int = field(default_factory=lambda: int(time.time()))

    @classmethod
    def build(cls, model: LocalModel, model_id: str, limits: Limits) -> "AppState":
        batcher = Batcher(model, limits.max_batch, limits.max_queue, limits.short_max_tokens, limits.short_job_tokens)
        return cls(model, model_id, limits, batcher)

    def model_card(self) -> dict:
        return {"id": self.model_id, "object": "model", "created": self.created, "owned_by": "rmt"}

    def check_model(self, name: str | None) -> None:
        if name and name != self.model_id:
            raise APIError(404, f"model {name!r} not served here; available: {self.model_id!r}", "model_not_found",
                           "model")

    def check_rows(self, rows: int, what: str, param: str) -> None:
        if rows > self.limits.max_request_prompts:
            raise APIError(400, f"{what} asks for {rows} completions; this server takes at most "
                           f"{self.limits.max_request_prompts} per request (rmt serve --max-request-prompts)",
                           "invalid_value", param)

    def fit(self, ids: list[int], max_new: int, param: str = "messages") -> None:
        if len(ids) > self.limits.max_prompt_tokens:
            raise APIError(400, f"the prompt has {len(ids)} tokens; this server takes at most "
                           f"{self.limits.max_prompt_tokens} prompt tokens per prompt (rmt serve --max-prompt-tokens)",
                           "context_length_exceeded", param)
        if not self.model.fits(len(ids), max_new):
            raise APIError(400, f"This model's maximum context length is {self.model.window} tokens; the request "
                           f"has {len(ids)} prompt tokens and asks for {max_new}.", "context_length_exceeded", param)

    def encode_messages(self, messages: list[dict]) -> list[int]:
        try:
            return self.model.encode(messages)
        except Exception as exc:  # the chat template refused the messages (its raise_exception, a missing key)
            from jinja2 import TemplateError

            if isinstance(exc, TemplateError):
                raise APIError(400, f"the model's chat template rejected the messages: {exc}", "invalid_value",
                               "messages") from None
            raise

    def _queue(self, job: Job) -> None:
        try:
            self.batcher.put(job)
        except QueueFull:
            raise APIError(429, f"the server is busy: {self.limits.max_queue} requests are waiting or decoding "
                           "(rmt serve --max-queue); retry later", "queue_full", None, "requests") from None
        except Stopping:
            raise APIError(503, "the server is shutting down", "shutting_down", None, "server_error") from None

    async def decode(self, request, prompts: list[list[int]], settings: Settings):
        """Queue ``prompts`` and wait (on the event loop, no worker thread held) for their ids; the
        job is cancelled when the client (``request``, a Starlette request) goes away or the handler
        is cancelled."""
        loop = asyncio.get_running_loop()
        finished = loop.create_future()

        def on_done():
            loop.call_soon_threadsafe(lambda: finished.done() or finished.set_result(None))

        job = Job(prompts, settings, on_done=on_done)
        self._queue(job)
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
        return job_result(job)

    def decode_choices(self, outputs, stops: list[str], max_new: int, prefix: str = ""):
        """(text, finish_reason, completion token ids) per output."""
        choices = []
        for ids, hit_eos in outputs:
            text, stopped = apply_stop(self.model.decode(ids), stops)
            reason = "stop" if hit_eos or stopped or len(ids) < max_new else "length"
            choices.append((prefix + text, reason, ids))
        return choices

    def pieces(self, text: str) -> list[str]:
        """The completion split at token boundaries, for streaming."""
        tokenizer = self.model.tokenizer
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
        out, done = [], ""
        for k in range(1, len(ids) + 1):
            now = tokenizer.decode(ids[:k], skip_special_tokens=True)
            if now.startswith(done) and len(now) > len(done) and not now.endswith("\ufffd"):
                out.append(now[len(done):])
                done = now
        if done != text:
            out.append(text[len(done):] if text.startswith(done) else text)
        return out


def job_result(job: Job):
    """A finished job's outputs, or its error in OpenAI's shape."""
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


def usage(prompt_tokens: int, choices) -> dict:
    completion = sum(len(ids) for _, _, ids in choices)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion}


def sse(events: Iterator[dict]):
    for event in events:
        yield f"data: {json.dumps(event, ensure_ascii=False)}\n\n"
    yield "data: [DONE]\n\n"
