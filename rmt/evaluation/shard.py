"""One evaluation across the processes of a launcher (``torchrun``, ``accelerate launch``), on one
machine or many.

Every process loads the model and builds the same list of cells to answer; process ``rank`` answers
cells ``rank, rank + world_size, ...`` of it. The processes move in step, one batch each per step,
and after every step the scored answers are gathered to rank 0, which alone reads and writes the
results store. So the store may live on rank 0's local disk (SQLite's WAL mode needs a local file
system, not NFS), a kill loses at most one step's answers, and the store a sharded run leaves is the
store one process would have written: a later run sees every cell done.

The process group comes from accelerate's ``PartialState`` (gloo on CPU, NCCL on GPUs, where each
process takes the GPU of its ``LOCAL_RANK``), started only when ``WORLD_SIZE`` > 1: a plain run never
imports torch.distributed for this.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

from rmt.errors import UsageError

# How long a process may wait for the others at one step: a step is one batch per process, and a
# batch of million-token inputs takes minutes; the default 30 minutes is too tight for slow models.
STEP_TIMEOUT = timedelta(hours=6)


@dataclass(frozen=True)
class Shard:
    """This process's part of a run: ``rank`` of ``world_size`` (0 of 1 when not launched)."""

    rank: int = 0
    world_size: int = 1
    device: str | None = None  # the launcher's device for this process (cuda:LOCAL_RANK), None: not launched

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def take(self, items: list) -> list:
        return items[self.rank::self.world_size]

    def broadcast(self, value):
        """Rank 0's ``value``, on every process."""
        if self.world_size == 1:
            return value
        import torch.distributed as dist  # lazy: as torch below

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value) -> list:
        """Every process's ``value``, in rank order, on every process."""
        if self.world_size == 1:
            return [value]
        import torch.distributed as dist  # lazy: as torch below

        out: list = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out


def launched_shard(device: str | None = None) -> Shard:
    """This process's shard under ``torchrun`` / ``accelerate launch`` (``WORLD_SIZE`` > 1), else
    the whole run. ``device``: the one asked for (``cpu`` keeps the processes off the GPUs)."""
    raw = os.environ.get("WORLD_SIZE", "1").strip() or "1"
    if not raw.isdigit() or int(raw) < 1:
        raise UsageError(f"environment variable WORLD_SIZE={raw!r} is not a process count; it is set by torchrun or "
                         "accelerate launch (unset it to run one process)")
    if int(raw) == 1:
        return Shard()
    # Lazy (torch, accelerate): rmt.evaluation.evaluate imports this module, and endpoint evaluations need neither.
    import torch
    from accelerate import PartialState

    # accelerate runs several processes on CPU (gloo) only when told to
    cpu = not torch.cuda.is_available() or str(device or "").startswith("cpu")
    per_machine = os.environ.get("LOCAL_WORLD_SIZE", "1")
    if not cpu and per_machine.isdigit() and int(per_machine) > torch.cuda.device_count():
        raise UsageError(f"the launcher started {per_machine} processes on this machine, which has "
                         f"{torch.cuda.device_count()} CUDA device(s) (one process each); start at most "
                         f"{torch.cuda.device_count()} per machine, or evaluate on the CPU with --device cpu")
    state = PartialState(cpu=cpu, timeout=STEP_TIMEOUT)
    return Shard(state.process_index, state.num_processes, str(state.device))
