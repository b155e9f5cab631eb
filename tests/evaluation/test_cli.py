"""`rmt eval` / `rmt report` end to end, and their one-line errors."""

import os
import subprocess
import sys

import pytest

from rmt.cli import main
from rmt.evaluation.store import ResultsStore
from rmt.serving.server import free_socket

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def rmt(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "rmt", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=ENV)


def test_eval_then_rerun_then_report(tiny_hf_dir, tmp_path):
    store = tmp_path / "results.sqlite"
    args = ["eval", tiny_hf_dir, "--tasks", "qa1", "--lengths", "0k,1k", "--samples", "2", "--store", store,
            "--max-new-tokens", "3", "--no-progress"]
    first = rmt(*args)
    assert first.returncode == 0, first.stderr
    # 1k is over the tiny GPT-2's 512-token window: read as its last window, marked in the table
    assert "4 answered, 0 already done, 0 over window, 2 read as the last window" in first.stdout
    assert "*" in first.stdout and "answered from the last window" in first.stdout  # the terminal table
    with ResultsStore(store) as s:
        assert len(s) == 4

    again = rmt(*args)  # resumes: nothing left to do
    assert again.returncode == 0 and "0 answered, 4 already done" in again.stdout

    report = rmt("report", store, "--markdown", tmp_path / "r.md", "--png", tmp_path / "r.png")
    assert report.returncode == 0, report.stderr
    assert (tmp_path / "r.png").stat().st_size > 1000
    md = (tmp_path / "r.md").read_text()
    assert "| qa1 |" in md and "\\*" in md and "answered from the last window" in md


def test_unreachable_endpoint_is_one_line_naming_the_url(tmp_path):
    sock = free_socket()  # bound, not listening
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    try:
        result = rmt("eval", f"openai:m@{url}", "--samples", "1", "--lengths", "0k", "--store", tmp_path / "r.sqlite",
                     "--retries", "0", "--no-progress")
    finally:
        sock.close()
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: cannot reach endpoint " + url) and "Traceback" not in result.stderr
    assert [l for l in lines if l.startswith("error:")] == [lines[-1]]
    assert list(tmp_path.iterdir()) == []  # no store, no cache file


def run_main(capsys, *args):
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    err = capsys.readouterr().err.strip()
    return exit_info.value.code, err


@pytest.mark.parametrize("args, message", [
    (["eval", "/no/such/model", "--samples", "1", "--lengths", "0k"], "error: unknown model '/no/such/model'"),
    (["eval", "x", "--data", "/no/such/data.jsonl"], "error: dataset not found: /no/such/data.jsonl"),
    (["eval", "x", "--rag", "maybe"], "error: unknown --rag 'maybe'; allowed: off, on, both"),
    (["eval", "openai:gpt", "--samples", "1", "--lengths", "0k"], "error: endpoint spec must be openai:MODEL@BASE_URL"),
    (["report", "/no/such/store.sqlite"], "error: results store not found: /no/such/store.sqlite"),
    (["eval", "x", "--public", "--samples", "1", "--lengths", "0k"],  # tests run with HF_*_OFFLINE=1
     "error: cannot load qa1/0k of the public BABILong dataset"),
    (["eval", "x", "--dtype", "fp8"], "error: unknown --dtype 'fp8'; allowed: auto, float32, bfloat16, float16"),
    (["demo", "--dtype", "fp8"], "error: unknown --dtype 'fp8'; allowed: auto, float32, bfloat16, float16"),
    (["serve", "x", "--dtype", "fp8"], "error: unknown --dtype 'fp8'; allowed: float32, bfloat16, float16"),
])
def test_user_errors_are_one_line(capsys, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    code, err = run_main(capsys, *args)
    assert code == 2 and err.startswith(message) and len(err.splitlines()) == 1, err
    assert not (tmp_path / "results.sqlite").exists()  # nothing written on a bad start


def test_store_from_another_version_is_one_line(capsys, tmp_path, records_0k):
    old = tmp_path / "old.sqlite"
    ResultsStore(old, benchmark_version="babilong-rmt-0").close()
    code, err = run_main(capsys, "report", old)
    assert code == 2 and "written for benchmark version 'babilong-rmt-0'" in err and len(err.splitlines()) == 1
    code, err = run_main(capsys, "eval", "/no/such/model", "--store", old, "--samples", "1", "--lengths", "0k")
    assert code == 2 and "written for benchmark version" in err  # checked before loading any model


def test_eval_on_dataset_written_by_generate(capsys, tmp_path):
    from rmt.babilong import generate
    from rmt.babilong.io import save_records

    from rmt.evaluation.evaluate import load_records_for_eval

    data = tmp_path / "d.jsonl"
    records = generate(task="qa1", length="0k", samples=3)
    save_records(records, data)
    assert load_records_for_eval(["qa1"], ["0k"], samples=2, data=data) == records[:2]
    code, err = run_main(capsys, "eval", "x", "--data", data, "--tasks", "qa1", "--lengths", "4k")
    assert code == 2 and "has no samples for qa1/4k; it has: qa1/0k" in err


def test_public_source_goes_through_load_public(monkeypatch):
    """--public reads RMT-team/babilong through rmt.babilong.public.load_public (stubbed: no network)."""
    import rmt.babilong.public as public
    from rmt.evaluation.evaluate import load_records_for_eval

    calls = []

    def fake_load_public(task, length, samples=None, **kwargs):
        calls.append((task, length, samples))
        return public.public_to_records([{"input": "Mary went to the hallway.", "question": "Where is Mary?",
                                          "target": "hallway"}] * samples, task, length)

    monkeypatch.setattr(public, "load_public", fake_load_public)
    records = load_records_for_eval(["qa1", "qa2"], ["0k", "4k"], samples=2, public=True)
    assert calls == [("qa1", "0k", 2), ("qa2", "0k", 2), ("qa1", "4k", 2), ("qa2", "4k", 2)]
    assert len(records) == 8 and {r["length"] for r in records} == {"0k", "4k"}


def test_chat_template_flag_on_a_model_without_one_is_one_line(capsys, tmp_path, tiny_hf_dir):
    code, err = run_main(capsys, "eval", tiny_hf_dir, "--chat-template", "--samples", "1", "--lengths", "0k",
                         "--store", tmp_path / "r.sqlite", "--no-progress")
    assert code == 2 and len(err.splitlines()) == 1 and "has no chat template" in err, err
    assert not (tmp_path / "r.sqlite").exists()
