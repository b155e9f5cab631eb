"""The decoding side of ``rmt serve``: a bounded queue of jobs, two decoding lanes, cancellation.

Request handlers hand their prompts (``n`` copies each) to :class:`Batcher` as a :class:`Job`. Two
decoding threads ("lanes") share the model:

- the short lane decodes small jobs (at most ``short_max_tokens`` new tokens per row, and at most
  ``short_job_tokens`` prompt + new tokens over all rows), batching everything that queued while it
  was busy;
- the long lane decodes the rest, one batch at a time.

So a maximal request (a huge ``max_tokens``, a million-token prompt to an RMT) never holds up the
small ones: they keep completing beside it. Torch inference on one module from two threads is safe
(no gradients, no state in the module); the only shared state is the global random generator, which
HF sampling reads, so sampling batches take turns (:attr:`Batcher.rng_lock`) and a seed still decides
its tokens alone.

Cancellation is checked between decode steps: a forward pre-hook on every submodule of the torch
model raises :class:`Cancelled` in a lane thread whose batch no live client waits for any more (every
job in it was cancelled: a client disconnected) or when the server is stopping. A batch whose jobs
are only partly cancelled runs on (the others still want their rows); it is bounded by the
per-request token cap. A disconnect cancels only its own request: the others in its batch get their
full answers (each the one the request gets alone), the cancelled job's rows are dropped from the
result, and its handler answered at once (499, to nobody).
"""

from __future__ import annotations

import queue
import threading
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable

SHORT, LONG = "short", "long"


class Cancelled(Exception):
    """Raised inside decoding when nobody waits for the batch any more (or the server stops)."""


class QueueFull(Exception):
    """More jobs waiting or decoding than the server takes."""


class Stopping(Exception):
    """The server is shutting down: queued and running jobs end with this."""


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


@dataclass
class Job:
    prompts: list[list[int]]  # one entry per choice (a prompt repeated n times)
    settings: Settings
    on_done: Callable[[], None] | None = None  # called from the decoding thread when result/error is set
    done: threading.Event = field(default_factory=threading.Event)
    cancelled: threading.Event = field(default_factory=threading.Event)
    result: list | None = None
    error: BaseException | None = None

    @property
    def tokens(self) -> int:
        """Prompt and completion tokens of all rows, at most: what the job can cost."""
        return sum(len(p) for p in self.prompts) + len(self.prompts) * self.settings.max_new_tokens

    def cancel(self) -> None:
        self.cancelled.set()


class Batcher:
    """Takes jobs (at most ``max_queue`` waiting or decoding), decodes them in two lanes, at most
    ``max_batch`` rows per ``model.generate_ids`` call, and checks for cancellation between decode
    steps (see the module docstring)."""

    def __init__(self, model, max_batch: int = 32, max_queue: int = 64, short_max_tokens: int = 256,
                 short_job_tokens: int = 8192):
        self.model, self.max_batch = model, max(1, int(max_batch))
        self.max_queue = max(1, int(max_queue))
        self.short_max_tokens, self.short_job_tokens = int(short_max_tokens), int(short_job_tokens)
        self.queues: dict[str, queue.Queue] = {SHORT: queue.Queue(), LONG: queue.Queue()}
        self.rng_lock = threading.Lock()  # sampling reads torch's global generator: one batch at a time
        self._lock = threading.Lock()
        self._pending = 0  # jobs submitted and not finished
        self._stopping = threading.Event()
        self._local = threading.local()  # the batch this lane thread decodes (for the cancel check)
        self.generate_calls = 0  # model.generate_ids calls: tests read it to see batching happen
        self.largest_batch = 0  # rows in the largest generate_ids call
        self.cancelled_batches = 0  # batches stopped because nobody waited for them
        self.busy = {SHORT: 0, LONG: 0}  # rows being decoded right now, per lane
        self.decoding: dict[str, list] = {SHORT: [], LONG: []}  # the jobs being decoded right now, per lane
        self.cancelled_jobs = 0  # jobs that ended cancelled (queued or in a batch), their batch went on or not
        self._hooks = _install_cancel_check(model, self._check)
        self.threads = [threading.Thread(target=self._run, args=(lane,), name=f"rmt-serve-{lane}", daemon=True)
                        for lane in (SHORT, LONG)]
        for thread in self.threads:
            thread.start()

    # ------------------------------------------------------------------ the request side
    @property
    def busy_rows(self) -> int:
        return sum(self.busy.values())

    @property
    def pending(self) -> int:
        return self._pending

    def queued(self) -> int:
        """Jobs waiting for a lane."""
        return sum(q.qsize() for q in self.queues.values())

    def lane(self, job: Job) -> str:
        short = job.settings.max_new_tokens <= self.short_max_tokens and job.tokens <= self.short_job_tokens
        return SHORT if short else LONG

    def put(self, job: Job) -> None:
        """Queue ``job``; :class:`QueueFull` when ``max_queue`` jobs wait or decode, :class:`Stopping`
        once the server stops."""
        if self._stopping.is_set():
            raise Stopping()
        with self._lock:
            if self._pending >= self.max_queue:
                raise QueueFull()
            self._pending += 1
        self.queues[self.lane(job)].put(job)
        if self._stopping.is_set():  # stopped while queueing: the lanes may be gone already
            self._finish(job, error=Stopping())

    def submit(self, prompts: list[list[int]], settings: Settings) -> list[tuple[list[int], bool]]:
        """Decode ``prompts`` and wait for the result (blocking; for callers outside an event loop)."""
        job = Job(prompts, settings)
        self.put(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]

    def stop(self) -> None:
        """Stop at once: running batches end at their next decode step, queued jobs end with
        :class:`Stopping`, new jobs are refused."""
        self._stopping.set()
        for q in self.queues.values():
            q.put(None)

    def close(self, timeout: float = 1.0) -> None:
        self.stop()
        for thread in self.threads:
            thread.join(timeout=timeout)
        for handle in self._hooks:
            handle.remove()
        self._hooks = []

    # ------------------------------------------------------------------ the decoding side
    def _check(self) -> None:
        batch = getattr(self._local, "batch", None)
        if batch is not None and (self._stopping.is_set() or all(job.cancelled.is_set() for job in batch)):
            raise Cancelled()

    def _finish(self, job: Job, result=None, error: BaseException | None = None) -> None:
        with self._lock:
            if job.done.is_set():
                return
            self._pending -= 1
            if isinstance(error, Cancelled):
                self.cancelled_jobs += 1
            job.result, job.error = result, error
            job.done.set()
        if job.on_done is not None:
            job.on_done()

    def _take(self, lane: str) -> list[Job] | None:
        """The jobs of the next round: the first queued job and, in the short lane, every job that
        queued behind it (up to ``max_batch`` rows); None when stopping."""
        q = self.queues[lane]
        while True:
            first = q.get()
            if first is None or self._stopping.is_set():
                if first is not None:
                    self._finish(first, error=Stopping())
                return None
            if first.cancelled.is_set():
                self._finish(first, error=Cancelled())
                continue
            break
        jobs, rows = [first], len(first.prompts)
        while lane == SHORT and rows < self.max_batch:
            try:
                job = q.get_nowait()
            except queue.Empty:
                break
            if job is None:
                q.put(None)  # stop after this round
                break
            if job.cancelled.is_set():
                self._finish(job, error=Cancelled())
                continue
            jobs.append(job)
            rows += len(job.prompts)
        return jobs

    def _run(self, lane: str) -> None:
        try:
            while True:
                jobs = self._take(lane)
                if jobs is None:
                    return
                groups: dict = {}
                for job in jobs:
                    # A seeded sampling request is decoded on its own, so its seed alone decides its tokens.
                    key = (job.settings, id(job)) if job.settings.seed is not None else job.settings
                    groups.setdefault(key, []).append(job)
                for group in groups.values():
                    self._decode(lane, group)
        finally:
            self._drain(lane)

    def _decode(self, lane: str, group: list[Job]) -> None:
        settings = group[0].settings
        prompts = [p for job in group for p in job.prompts]
        out: list = []
        self._local.batch = group
        self.decoding[lane] = list(group)
        try:
            with self.rng_lock if settings.do_sample else nullcontext():
                for start in range(0, len(prompts), self.max_batch):
                    self._check()  # between calls too (a model without a torch module has no hook)
                    rows = prompts[start:start + self.max_batch]
                    self.generate_calls += 1
                    self.largest_batch = max(self.largest_batch, len(rows))
                    self.busy[lane] = len(rows)
                    out.extend(self.model.generate_ids(rows, settings.max_new_tokens, **settings.sampling()))
        except Cancelled:
            self.cancelled_batches += 1
            error = Stopping() if self._stopping.is_set() else Cancelled()
            for job in group:
                self._finish(job, error=error)
            return
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
            for job in group:
                self._finish(job, error=exc)
            return
        finally:
            self._local.batch = None
            self.busy[lane] = 0
            self.decoding[lane] = []
        start = 0
        for job in group:
            if job.cancelled.is_set():  # its client went away while the others' rows decoded
                self._finish(job, error=Cancelled())
            else:
                self._finish(job, out[start:start + len(job.prompts)])
            start += len(job.prompts)

    def _drain(self, lane: str) -> None:
        """Everything still queued in ``lane`` ends with :class:`Stopping`."""
        q = self.queues[lane]
        while True:
            try:
                job = q.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                self._finish(job, error=Stopping())


def _install_cancel_check(model, check: Callable[[], None]) -> list:
    """A forward pre-hook on every submodule of ``model.model`` (when it is a torch module) that
    calls ``check``: each decode step runs some of them, so decoding can stop between steps. The
    hooks do nothing outside a lane thread (no batch there); their handles are returned for removal."""
    module = getattr(model, "model", None)
    try:
        import torch
    except ImportError:  # pragma: no cover - the models need torch
        return []
    if not isinstance(module, torch.nn.Module):
        return []

    def hook(_module, _args):
        check()

    return [m.register_forward_pre_hook(hook) for m in module.modules()]
