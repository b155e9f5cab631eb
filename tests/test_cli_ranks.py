"""Under torchrun / accelerate launch every process meets the same user error: rank 0 prints its one
line, the other ranks exit with the same status in silence (issue 27, item 2). Real subprocesses
with the launchers' environment variables (no launcher needed)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CASES = {
    "usage error": (["demo", "--tokens", "0"], "--tokens must be >= 1, got 0"),
    "flag parsing": (["demo", "--no-such-flag"], "No such option"),
    "missing file": (["report", "no-such-store.sqlite"], "no-such-store.sqlite"),
}


def rmt(args, cwd, **env):
    full = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "RMT_DEBUG")}
    full.update(PYTHONPATH=str(REPO), **env)
    return subprocess.run([sys.executable, "-c", "import sys; from rmt.cli import main; main(sys.argv[1:])", *args],
                          capture_output=True, text=True, env=full, cwd=cwd, timeout=120)


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_user_error_is_printed_by_rank_0_only(tmp_path, case):
    args, needle = CASES[case]
    alone = rmt(args, tmp_path)
    assert alone.returncode == 2 and needle in alone.stderr, alone.stderr
    lines = {}
    for rank in (0, 1, 3):  # torchrun sets RANK, LOCAL_RANK and WORLD_SIZE
        got = rmt(args, tmp_path, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="4")
        assert got.returncode == 2, got.stderr  # every process fails alike: the launcher sees it
        lines[rank] = got.stderr
    assert lines[0] == alone.stderr and lines[0].count("error:") == 1
    assert lines[1] == "" and lines[3] == ""


def test_local_rank_alone_decides_and_debug_lets_every_rank_speak(tmp_path):
    args, needle = CASES["usage error"]
    assert rmt(args, tmp_path, LOCAL_RANK="1").stderr == ""  # an accelerate/torch launcher that sets only LOCAL_RANK
    assert needle in rmt(args, tmp_path, LOCAL_RANK="0").stderr
    debug = rmt(args, tmp_path, RANK="2", WORLD_SIZE="4", RMT_DEBUG="1")
    assert debug.returncode == 2 and f"[rank 2] error: " in debug.stderr and needle in debug.stderr, debug.stderr
    assert "Traceback" in debug.stderr
