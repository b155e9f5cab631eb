"""The short soak (issue 27, item 1): bench/soak.py against `rmt serve` of the tiny chat model, 32 real
`openai` clients for 15 s: chat and completions, streaming and not, n up to 3, short and long prompts,
streams closed mid-way, requests given up, prompts over --max-prompt-tokens. What must hold whatever
the machine's speed: no 5xx, only documented refusals, nothing left behind, every greedy answer equal
to the same request sent alone, a clean exit. (Timings and RSS are printed, not asserted.)"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("openai")

REPO = Path(__file__).resolve().parents[2]


def test_short_soak_of_rmt_serve(wordy_chat_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    got = subprocess.run([sys.executable, str(REPO / "bench" / "soak.py"), str(wordy_chat_dir), "--duration", "15",
                          "--clients", "32", "--short-words", "20", "--long-words", "120", "--threads", "1",
                          "--out", str(tmp_path / "soak")],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=170)
    print(got.stdout[-3000:])
    result = json.loads(got.stdout.strip().splitlines()[-1])
    checks = result["checks"]
    for name in ("no_5xx", "refusals_documented", "no_connection_errors", "server_log_clean", "nothing_left_behind",
                 "greedy_equal_alone", "clean_exit"):
        assert checks[name], (name, result)
    outcomes = result["outcomes"]
    assert result["clients"] == 32 and outcomes["ok"] > 0
    assert outcomes["disconnected"] > 0 and outcomes["cancelled"] > 0  # both kinds of going away happened
    assert set(result["refusals"]) == {"400 context_length_exceeded"}  # the over-cap prompts, refused
    assert result["after"]["cancelled_jobs"] > 0  # the server saw clients go away and dropped their jobs
    assert result["greedy"]["answers_compared"] > 0 and result["greedy"]["differ"] == 0
    assert json.loads((tmp_path / "soak" / "results.json").read_text())["requests"] == result["requests"]
    assert (tmp_path / "soak" / "server.log").is_file()
