"""rmt.atomic: outputs appear whole or not at all."""

import pytest

from rmt.atomic import atomic_dir, atomic_file


def test_atomic_file_writes_and_returns_the_writers_result(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    assert atomic_file(target, lambda tmp: open(tmp, "w").write("hello")) == 5
    assert target.read_text() == "hello"
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]


def test_atomic_file_failure_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")

    def broken(tmp):
        open(tmp, "w").write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_file(target, broken)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_dir_replaces_an_existing_dir_only_when_complete(tmp_path):
    target = tmp_path / "ckpt"
    atomic_dir(target, lambda tmp: (tmp / "a").write_text("1"))
    assert (target / "a").read_text() == "1"

    def broken(tmp):
        (tmp / "a").write_text("2")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_dir(target, broken)
    assert (target / "a").read_text() == "1"  # the old one is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]

    atomic_dir(target, lambda tmp: (tmp / "b").write_text("3"))
    assert sorted(p.name for p in target.iterdir()) == ["b"]  # replaced whole, not merged
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
