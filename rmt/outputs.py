"""The one rule for every path a command writes: ``rmt generate --out``, ``rmt eval --store`` and
``--cache``, ``rmt report --markdown`` and ``--png``, ``rmt train`` / ``rmt quickstart --output-dir``.

* Missing parent directories are created, like ``mkdir -p`` (``rmt train --output-dir runs/qa1``
  works in a fresh clone), but only when the output is written, after every input was checked:
  a command that fails on bad input leaves nothing behind.
* These are errors, each one line naming the flag and the path: an existing file where a
  directory is needed on the way (``a_file/out.md``); a directory where a file is wanted, or a file
  where a directory is wanted; the current directory or one above it (``--out .``); a suffix the
  output's format does not have; a place that cannot be written (probed with a real file, since
  ``os.access`` says yes to root and says nothing about read-only or odd filesystems).
* An existing file is replaced only when the command wrote it, or with ``--overwrite``
  (``check_replaceable``; records and task files: ``rmt.babilong.io``, ``rmt.babilong.lm_eval``).
* The check itself creates nothing.

Standard library only: both the data side and the model side use it.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Callable, Iterable

from rmt.errors import UsageError


def _describe(suffixes: Iterable[str]) -> str:
    return ", ".join(s if s else "no suffix (a directory)" for s in suffixes)


def check_output(path: str | os.PathLike, flag: str, *, kind: str = "file",
                 suffixes: Iterable[str] | None = None) -> Path:
    """Check that ``path`` can be written as the output ``flag`` names (``kind``: ``file`` or
    ``dir``; ``suffixes``: the allowed ones, ``""`` meaning none); return it, ``~`` expanded.
    Raises UsageError with one line; creates nothing."""
    if kind not in ("file", "dir"):
        raise UsageError(f"kind must be 'file' or 'dir', got {kind!r}")
    given = str(path)
    path = Path(path).expanduser()
    if not given.strip():
        raise UsageError(f"{flag} is empty; give a path")
    full = Path(os.path.abspath(path))
    cwd = Path(os.getcwd())
    if full == cwd or full in cwd.parents:
        raise UsageError(f"{flag} {given} is the current directory (or one above it); give a new name inside it")
    if path.exists():
        if kind == "file" and path.is_dir():
            raise UsageError(f"{flag} {given} is a directory; give a file name")
        if kind == "dir" and not path.is_dir():
            raise UsageError(f"{flag} {given} is a file; give a directory name")
    if suffixes is not None:
        allowed = tuple(suffixes)
        suffix = path.suffix.lower()
        if suffix not in allowed:
            shown = f"suffix {suffix!r}" if suffix else "no suffix"
            raise UsageError(f"{flag} {given} has {shown}; allowed: {_describe(allowed)}")
    existing = full.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{flag} {given} is not writable: {existing} is a file, so no directory can be made there")
    # A file is written beside itself (temp, then rename); a directory output may be written
    # into (a training run) or replaced whole: probe every directory that will be written.
    places = [existing] + ([full] if kind == "dir" and full.is_dir() else [])
    for place in places:
        probe = place / f".rmt-write-probe-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            os.unlink(probe)
        except OSError as exc:
            raise UsageError(f"{flag} {given} is not writable ({exc.strerror or exc} in {place})") from None
    return path


def check_replaceable(path: str | os.PathLike, flag: str, written_here: Callable[[Path], bool],
                      overwrite: bool = False) -> None:
    """An existing file at ``path`` is replaced only when ``written_here(path)`` recognises it (by
    its content) as this command's own output, when it is empty, or with ``overwrite`` (the
    command's ``--overwrite``): a user's own file is never lost. Raises UsageError with one
    line; reads at most what ``written_here`` reads, creates nothing."""
    path = Path(path).expanduser()
    if overwrite or not path.is_file() or path.stat().st_size == 0 or written_here(path):
        return
    raise UsageError(f"{flag} {path} is a file that rmt did not write (nothing is replaced); "
                     f"choose a new name, or pass --overwrite to replace it")


# ----------------------------------------------------------------------------------- bench/ outputs
BENCH_MARKER = ".rmt-bench"  # in a bench's --out directory: the bench's name (its own output, replaceable)


def bench_wrote(path: str | os.PathLike, bench: str) -> bool:
    """Whether the directory ``path`` holds the marker that ``bench/BENCH.py --out`` leaves there."""
    marker = Path(path) / BENCH_MARKER
    try:
        with open(marker, encoding="utf-8", errors="replace") as f:
            return marker.is_file() and f.read(200).strip() == bench
    except OSError:
        return False


def check_bench_output(path: str | os.PathLike, bench: str, flag: str = "--out", overwrite: bool = False) -> Path:
    """The ``--out`` directory of ``bench/BENCH.py``, checked before any work: the output rule above
    (``check_output``), and a directory that exists and holds files is taken only when this bench
    wrote it (its :data:`BENCH_MARKER`) or with ``overwrite``, as ``rmt quickstart --output-dir``
    refuses a non-empty directory: a user's files are never replaced. Raises UsageError with one
    line; creates nothing."""
    path = check_output(path, flag, kind="dir")
    if overwrite or not path.is_dir():
        return path
    held = sorted(p.name for p in path.iterdir())
    if not held or bench_wrote(path, bench):
        return path
    shown = ", ".join(held[:3]) + (", ..." if len(held) > 3 else "")
    raise UsageError(f"{flag} {path} is not empty (it holds {shown}) and was not written by bench/{bench}.py "
                          f"(nothing is replaced); choose a new or empty directory, or pass --overwrite")


def start_bench_output(path: str | os.PathLike, bench: str) -> Path:
    """Create the checked ``--out`` directory (parents too) and mark it as ``bench``'s own output."""
    path = Path(path).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    (path / BENCH_MARKER).write_text(bench + "\n", encoding="utf-8")
    return path


def bench_out_or_exit(parser, path, bench: str, overwrite: bool = False) -> Path | None:
    """:func:`check_bench_output` for a bench script's argparse ``parser``: a bad ``--out`` is one
    ``error: ...`` line and exit status 2 (as the ``rmt`` command), before any work; None stays None."""
    if path is None:
        return None
    try:
        return check_bench_output(path, bench, overwrite=overwrite)
    except UsageError as exc:
        parser.exit(2, f"error: {' '.join(str(exc).split())}\n")
