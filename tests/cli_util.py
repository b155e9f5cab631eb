"""Running `rmt` in-process for the CLI tests, and a snapshot of a directory tree."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `rmt ARGS` run in this process through its entry point."""
    from rmt.cli import main

    capsys.readouterr()  # drop what earlier steps printed
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    code = info.value.code
    return (0 if code is None else code), out, err


def snapshot(root: str | os.PathLike) -> dict:
    """Every file and directory under ``root`` (hidden ones included) with its mode, and for files
    their size and modification time: two equal snapshots mean nothing was created, removed or
    changed. (A directory's own mtime is left out: the write-permission probe of the output rule
    creates and removes a file, which touches it and nothing else.)"""
    root = Path(root)
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            path = Path(dirpath) / name
            found[str(path.relative_to(root))] = (path.lstat().st_mode,)
        for name in filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            found[str(path.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return found


def one_error_line(code: int, err: str) -> str:
    """Assert the shape of a user error (exit 2, one line on stderr, no traceback); return the line."""
    lines = err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]
