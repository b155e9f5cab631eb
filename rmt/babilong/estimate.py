"""Time, disk and memory of a generation, estimated before it starts (``rmt generate`` prints it for
large ones, so ``--lengths 1000M`` does not start blind).

The rates were measured with ``iter_records`` on qa1 at 1M and 5M tokens (2 samples each), GPT-2
tokenizer, the 18 test books as background, on a shared 2-core CPU (load 5-10):
0.60-0.66M tokens per CPU second (books; 0.84M on the built-in fallback text), 4.2-4.9 bytes of
JSONL per token, peak RSS 107 MiB (1M-token records) and 215 MiB (5M): ~27 bytes per token of the
longest record above a ~80 MiB base. Books are split into sentences once (~50-90 MB/s) on top.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

TOKENS_PER_SECOND = 600_000
JSONL_BYTES_PER_TOKEN = 4.5
RSS_BYTES_PER_TOKEN = 27  # of the longest record: its sentences, counts, text and JSON line at once
BASE_RSS_BYTES = 100 * 2**20
ESTIMATE_FROM_TOKENS = 10_000_000  # a generation of at least this many tokens prints its estimate
IN_MEMORY_FORMATS = ("parquet", "hf")  # built from all records at once at the end (the others stream)


def _size(n: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n / 1e3:.0f} kB"


def _duration(seconds: float) -> str:
    if seconds >= 5400:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 90:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


def estimate(n_tasks: int, lengths: list[tuple[str, int]], samples: int, fmt: str, out: Path) -> dict:
    """Tokens, seconds, disk bytes (the partial JSONL, plus the final output for the non-JSONL
    formats) and peak memory bytes of a generation, with the free disk and memory of this machine."""
    tokens = n_tasks * samples * sum(t for _, t in lengths)
    longest = max((t for _, t in lengths), default=0)
    jsonl = tokens * JSONL_BYTES_PER_TOKEN
    memory = BASE_RSS_BYTES + longest * RSS_BYTES_PER_TOKEN + (3 * jsonl if fmt in IN_MEMORY_FORMATS else 0)
    parent = Path(out).parent if not Path(out).is_dir() else Path(out)
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    try:
        free_disk = shutil.disk_usage(parent).free
    except OSError:
        free_disk = None
    try:
        total_memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total_memory = None
    return {"tokens": tokens, "seconds": tokens / TOKENS_PER_SECOND,
            "disk": jsonl * (1 if fmt == "jsonl" else 2), "memory": memory,
            "free_disk": free_disk, "total_memory": total_memory}


def describe(est: dict, fmt: str) -> list[str]:
    """The lines ``rmt generate`` prints: the estimate, then a warning per resource that looks short."""
    lines = [f"estimate: {est['tokens'] / 1e6:,.0f}M tokens, about {_duration(est['seconds'])} "
             f"(~{TOKENS_PER_SECOND / 1e6:.1f}M tokens/s measured on one CPU core), about {_size(est['disk'])} of disk"
             + (" (the partial JSONL, then the output beside it)" if fmt != "jsonl" else "")
             + f", peak memory about {_size(est['memory'])}"
             + (f" ({fmt} builds its file from all records at once)" if fmt in IN_MEMORY_FORMATS else "")]
    if est["free_disk"] is not None and est["disk"] > est["free_disk"]:
        lines.append(f"warning: only {_size(est['free_disk'])} of disk is free there")
    if est["total_memory"] is not None and est["memory"] > est["total_memory"]:
        lines.append(f"warning: this machine has {_size(est['total_memory'])} of memory")
    return lines
