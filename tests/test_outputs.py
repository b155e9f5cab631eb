"""rmt.outputs: the one rule for output paths, and rmt.atomic: modes and leftovers of killed writers."""

import os
import stat
import subprocess
import sys

import pytest

from rmt.atomic import atomic_dir, atomic_file, sweep_leftovers
from rmt.outputs import check_output


def tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_missing_parents_are_allowed_but_the_check_creates_nothing(tmp_path):
    target = tmp_path / "a" / "b" / "r.md"
    assert check_output(target, "--markdown", suffixes=(".md",)) == target
    assert tree(tmp_path) == []  # created only when written
    atomic_file(target, lambda tmp: open(tmp, "w").write("x"))
    assert target.read_text() == "x"


@pytest.mark.parametrize("case, message", [
    ("file_on_the_way", "is a file, so no directory can be made there"),
    ("dir_for_file", "is a directory; give a file name"),
    ("file_for_dir", "is a file; give a directory name"),
    ("cwd", "is the current directory"),
    ("parent_of_cwd", "is the current directory (or one above it)"),
    ("suffix", "has suffix '.csv'; allowed: .jsonl, no suffix (a directory)"),
    ("unwritable", "is not writable"),
    ("empty", "is empty"),
])
def test_bad_output_paths_are_one_line_errors(tmp_path, monkeypatch, case, message):
    (tmp_path / "f").write_text("x")
    (tmp_path / "d").mkdir()
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    path, kind, suffixes = {
        "file_on_the_way": (tmp_path / "f" / "out.md", "file", None),
        "dir_for_file": (tmp_path / "d", "file", None),
        "file_for_dir": (tmp_path / "f", "dir", None),
        "cwd": (".", "dir", None),
        "parent_of_cwd": ("..", "dir", None),
        "suffix": (tmp_path / "o20.csv", "file", (".jsonl", "")),
        "unwritable": ("/proc/out.md", "file", None),  # exists, cannot hold files (even for root)
        "empty": ("", "file", None),
    }[case]
    before = tree(tmp_path)
    with pytest.raises((ValueError, PermissionError)) as info:
        check_output(path, "--flag", kind=kind, suffixes=suffixes)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert tree(tmp_path) == before


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_outputs_get_the_usual_modes_not_0600(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_file(tmp_path / "f.txt", lambda tmp: open(tmp, "w").write("x"))
        atomic_dir(tmp_path / "d", lambda tmp: (tmp / "a").write_text("1"))
    finally:
        os.umask(old)
    assert _mode(tmp_path / "f.txt") == 0o666 & ~umask
    assert _mode(tmp_path / "d") == 0o777 & ~umask
    assert _mode(tmp_path / "d" / "a") == 0o666 & ~umask


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_leftovers_of_a_killed_writer_are_swept_on_the_next_write(tmp_path):
    dead = _dead_pid()
    target = tmp_path / "out.jsonl"
    leftover = tmp_path / f".out.jsonl.{dead}-0123abcd.tmp"
    leftover.write_text("half a file")
    leftover_dir = tmp_path / f".out.jsonl.{dead}-89abcdef.tmp"
    leftover_dir.mkdir()
    live = tmp_path / f".out.jsonl.{os.getpid()}-00000000.tmp"  # a writer still running
    live.write_text("in progress")
    other = tmp_path / f".other.jsonl.{dead}-0123abcd.tmp"  # another output's: not ours to judge
    other.write_text("x")
    user = tmp_path / ".out.jsonl.notes.tmp"  # not a name rmt makes
    user.write_text("mine")
    atomic_file(target, lambda tmp: open(tmp, "w").write("new"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["out.jsonl", live.name, other.name, user.name])


def test_a_dir_moved_aside_by_a_killed_replace_goes_back(tmp_path):
    dead = _dead_pid()
    target = tmp_path / "hf"
    aside = tmp_path / f".hf.{dead}-0123abcd.old"
    aside.mkdir()
    (aside / "data").write_text("the previous output")
    half = tmp_path / f".hf.{dead}-89abcdef.tmp"
    half.mkdir()
    assert sorted(p.name for p in sweep_leftovers(target)) == [half.name]
    assert (target / "data").read_text() == "the previous output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]


def test_outputs_of_writers_that_make_private_files_get_the_usual_modes(tmp_path):
    """safetensors writes a 0600 temp file and renames it over its target, whatever the umask."""
    from safetensors.torch import save_file
    import torch

    old = os.umask(0o022)
    try:
        atomic_file(tmp_path / "w.safetensors", lambda tmp: save_file({"a": torch.zeros(2)}, tmp))

        def private_files(tmp):
            fd = os.open(tmp / "inner", os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
            os.mkdir(tmp / "sub", 0o700)

        atomic_dir(tmp_path / "d", private_files)
    finally:
        os.umask(old)
    assert _mode(tmp_path / "w.safetensors") == 0o644
    assert _mode(tmp_path / "d" / "inner") == 0o644 and _mode(tmp_path / "d" / "sub") == 0o755
