"""Atomic writes: every output (records, checkpoints, results, plots) goes to a temp file or
directory beside its destination first and is renamed into place only once complete, so a
failure or a kill never leaves a half-written output. Standard library only: both the data side
and the model side use it.

Temp names are ``.<name>.<pid>-<random>.tmp`` (and ``.<name>.<pid>-<random>.old`` for a directory
being replaced), so that the next write to the same destination can tell the leftovers of a
killed process (its pid is gone) from the work of one still running, and sweep them away.

Outputs get the ordinary modes (0666 for files, 0777 for directories, both minus the umask), not
the 0600/0700 of ``tempfile`` or of writers that make private files: outputs must be readable
like any other file the user creates.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Callable

_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)-[0-9a-f]{8}\.(?:tmp|old)$")


def umask() -> int:
    """The process's umask, read without changing it where Linux allows."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore at once
    os.umask(mask)
    return mask


def usual_modes(path: str | os.PathLike) -> None:
    """Give ``path`` (and, for a directory, everything in it) the modes a file or directory made by
    the user would have: 0666/0777 minus the umask. Some writers create their files 0600 whatever
    the umask (safetensors writes a private temp file and renames it over the target)."""
    mask = umask()
    path = Path(path)
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)
    if path.is_dir():
        for root, dirs, files in os.walk(path):
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o777 & ~mask)
            for name in files:
                full = os.path.join(root, name)
                if not os.path.islink(full):
                    os.chmod(full, (0o777 if os.stat(full).st_mode & 0o111 else 0o666) & ~mask)


def _temp_path(path: Path, kind: str = "tmp") -> Path:
    return path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.{kind}"


def new_temp_file(path: str | os.PathLike) -> Path:
    """A new empty file beside ``path`` with a leftover-sweepable name and the umask's mode."""
    path = Path(path)
    while True:
        tmp = _temp_path(path)
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue


def new_temp_dir(path: str | os.PathLike, kind: str = "tmp") -> Path:
    """A new empty directory beside ``path`` with a leftover-sweepable name and the umask's mode."""
    path = Path(path)
    while True:
        tmp = _temp_path(path, kind)
        try:
            os.mkdir(tmp, 0o777)
            return tmp
        except FileExistsError:  # pragma: no cover
            continue


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def sweep_leftovers(path: str | os.PathLike) -> list[Path]:
    """Remove the temp files/dirs that killed processes left beside ``path``; return them.

    Only names this module makes for exactly this destination, and only of processes that are no
    longer running: a concurrent writer's temp is never touched. A directory that was moved aside
    to be replaced (``.old``) goes back into place when the kill came before its replacement did."""
    path = Path(path)
    removed = []
    try:
        entries = sorted(path.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _LEFTOVER.match(entry.name)
        if not match or match.group("name") != path.name or _pid_alive(int(match.group("pid"))):
            continue
        if entry.name.endswith(".old") and not os.path.lexists(path):
            os.replace(entry, path)
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def atomic_file(path: str | os.PathLike, write: Callable[[str], object]):
    """Call ``write(tmp)`` on a temp file beside ``path``, then rename it to ``path``; return what
    ``write`` returned. On any error the temp file is removed and ``path`` is left as it was.
    The temp name ends in ``.tmp``: writers that pick a format by extension must be told it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_leftovers(path)
    tmp = new_temp_file(path)
    try:
        result = write(str(tmp))
        usual_modes(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return result


def atomic_dir(path: str | os.PathLike, write: Callable[[Path], object]):
    """Call ``write(tmp_dir)`` on a temp directory beside ``path``, then rename it to ``path``;
    return what ``write`` returned. An existing ``path`` is replaced only after the new one is
    complete (moved aside, then deleted). On any error the temp directory is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_leftovers(path)
    tmp = new_temp_dir(path)
    try:
        result = write(tmp)
        usual_modes(tmp)
        if path.exists() and not path.is_symlink():
            old = _temp_path(path, "old")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result
