"""Atomic writes: every output (records, checkpoints, results, plots) goes to a temp file or
directory beside its destination first and is renamed into place only once complete, so a
failure or a kill never leaves a half-written output. Standard library only: both the data side
and the model side use it."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable


def atomic_file(path: str | os.PathLike, write: Callable[[str], object]):
    """Call ``write(tmp)`` on a temp file beside ``path``, then rename it to ``path``; return what
    ``write`` returned. On any error the temp file is removed and ``path`` is left as it was.
    The temp name ends in ``.tmp``: writers that pick a format by extension must be told it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        result = write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return result


def atomic_dir(path: str | os.PathLike, write: Callable[[Path], object]):
    """Call ``write(tmp_dir)`` on a temp directory beside ``path``, then rename it to ``path``;
    return what ``write`` returned. An existing ``path`` is replaced only after the new one is
    complete (moved aside, then deleted). On any error the temp directory is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        result = write(tmp)
        if path.exists() and not path.is_symlink():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old-"))
            os.replace(path, old / "x")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result
