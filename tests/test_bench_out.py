"""Every ``bench/*.py --out`` follows the one output rule (rmt.outputs): a directory that exists and
holds files the bench did not write is refused before any work, with one line; nothing in it changes
(issue 27, item 2)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rmt.errors import UsageError
from rmt.outputs import BENCH_MARKER, bench_wrote, check_bench_output, start_bench_output
from tests.cli_util import snapshot

REPO = Path(__file__).resolve().parents[1]
POSITIONAL = {"soak.py": ["some-model"]}  # what a bench needs besides --out (the refusal comes first)
BENCHES = sorted(p for p in (REPO / "bench").glob("*.py") if re.search(r"""["']--out["']""", p.read_text()))


def test_every_bench_with_out_uses_the_output_rule():
    assert {p.stem for p in BENCHES} >= {"real_model", "train_precision", "soak"}
    for path in BENCHES:
        text = path.read_text()
        assert "bench_out_or_exit(" in text and "start_bench_output(" in text, path.name


def run_bench(path, *args, cwd):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=120)


@pytest.mark.parametrize("bench", [p.name for p in BENCHES])
def test_a_users_directory_or_file_is_refused_before_any_work(tmp_path, bench):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "results.json").write_text("my own numbers\n")
    (tmp_path / "notes.txt").write_text("mine too\n")
    before = snapshot(tmp_path)
    got = run_bench(REPO / "bench" / bench, *POSITIONAL.get(bench, []), "--out", str(mine), cwd=tmp_path)
    assert got.returncode == 2, got.stderr
    lines = got.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --out") and "was not written by" in lines[0], got.stderr
    assert "--overwrite" in lines[0]
    got = run_bench(REPO / "bench" / bench, *POSITIONAL.get(bench, []), "--out", str(tmp_path / "notes.txt"),
                    cwd=tmp_path)
    assert got.returncode == 2 and "is a file; give a directory name" in got.stderr, got.stderr
    assert snapshot(tmp_path) == before


def test_new_empty_and_own_directories_are_taken(tmp_path):
    assert check_bench_output(tmp_path / "new" / "dir", "soak") == tmp_path / "new" / "dir"
    assert not (tmp_path / "new").exists()  # the check creates nothing
    (tmp_path / "empty").mkdir()
    check_bench_output(tmp_path / "empty", "soak")
    own = start_bench_output(tmp_path / "own", "soak")
    (own / "results.json").write_text("{}")
    assert bench_wrote(own, "soak") and (own / BENCH_MARKER).read_text() == "soak\n"
    check_bench_output(own, "soak")  # its own output: a rerun replaces it
    with pytest.raises(UsageError, match="not written by bench/real_model.py"):
        check_bench_output(own, "real_model")  # another bench's output is not this one's
    check_bench_output(own, "real_model", overwrite=True)
