"""How many CPU threads torch uses when the user does not say (``--threads``).

torch starts one thread per core. On a machine whose cores are busy with other work that is the
slow choice by far: the threads wait for each other at every operation, and on 2 shared cores
`rmt train` took 8x longer with torch's 2 threads than with 1 (``bench/threads.py``, docs/training.md).
On an idle machine, more threads help larger models. So the default is one thread per core that
is not already busy (the 1-minute load average), shared among the processes of a data-parallel
run on this machine, and never less than one. ``OMP_NUM_THREADS`` set by the user wins.

Standard library only.
"""

from __future__ import annotations

import os

from rmt.errors import UsageError


def available_cores() -> int:
    """Cores this process may run on (a container's or ``taskset``'s limit, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def default_threads() -> int:
    """Threads for torch when none are asked for (see the module doc)."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) >= 1:
        return int(env)
    cores = available_cores()
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):  # pragma: no cover - no load average on this system
        busy = 0.0
    free = max(1, min(cores, round(cores - busy)))
    local = os.environ.get("LOCAL_WORLD_SIZE", "1")
    processes = int(local) if local.isdigit() and int(local) >= 1 else 1
    return max(1, free // processes)


def set_threads(threads: int | None, flag: str = "--threads") -> int:
    """Set torch's CPU threads to ``threads`` (checked), or to ``default_threads()`` when None; return it."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise UsageError(f"{flag} must be an integer >= 1, got {threads!r}")
    import torch  # lazy: available_cores() serves callers that never load torch (rmt reproduce's planning)

    n = threads if threads is not None else default_threads()
    torch.set_num_threads(n)
    return n
