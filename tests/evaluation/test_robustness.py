"""`rmt eval` / `rmt report` / `rmt serve`: nothing of the user's is touched, bad input is one line."""

import json
import os
import sqlite3
import stat
import time

import pytest

from rmt.evaluation.evaluate import evaluate
from rmt.evaluation.store import ResultsStore
from tests.cli_util import one_error_line, run_cli, snapshot

from .conftest import OracleRunner


@pytest.fixture
def store(tmp_path, records_0k):
    path = tmp_path / "results.sqlite"
    evaluate(OracleRunner(), records_0k, path, progress=False)
    return path


def test_an_unrelated_sqlite_database_is_refused_untouched(capsys, tmp_path, tiny_hf_dir):
    db = tmp_path / "app.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE users (name TEXT)")
        conn.execute("INSERT INTO users VALUES ('ada')")
    conn.close()
    before = snapshot(tmp_path)
    line = one_error_line(*run_cli(capsys, "eval", tiny_hf_dir, "--store", db, "--samples", "1", "--lengths", "0k")[::2])
    assert "app.db is an SQLite database but not a results store (its tables: users)" in line
    with pytest.raises(ValueError, match="not a results store"):
        ResultsStore(db)
    assert snapshot(tmp_path) == before  # no tables added, no -wal/-shm files


def test_a_file_that_is_not_sqlite_is_refused_untouched(capsys, tmp_path, tiny_hf_dir):
    notes = tmp_path / "notes.sqlite"
    notes.write_text("just text\n" * 200)
    before = snapshot(tmp_path)
    line = one_error_line(*run_cli(capsys, "eval", tiny_hf_dir, "--store", notes, "--samples", "1", "--lengths", "0k")[::2])
    assert "not a results store" in line and "notes.sqlite" in line
    assert snapshot(tmp_path) == before


def test_an_unwritable_store_says_unwritable(capsys, tmp_path, tiny_hf_dir):
    line = one_error_line(*run_cli(capsys, "eval", tiny_hf_dir, "--store", "/proc/r.sqlite", "--samples", "1",
                                   "--lengths", "0k")[::2])
    assert line.startswith("error: --store /proc/r.sqlite is not writable")


def test_a_prompt_file_that_is_not_yaml_names_file_and_line(capsys, tmp_path, tiny_hf_dir):
    bad = tmp_path / "bad.yaml"
    bad.write_text("qa1:\n  instruction: fine\n  examples: [unclosed\n")
    line = one_error_line(*run_cli(capsys, "eval", tiny_hf_dir, "--prompts", bad, "--store", tmp_path / "r.sqlite",
                                   "--samples", "1", "--lengths", "0k")[::2])
    assert f"prompt file {bad}, line 4: not valid YAML" in line
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'{"qa1":\n {"instruction": "caf\xe9"}}\n')
    line = one_error_line(*run_cli(capsys, "eval", tiny_hf_dir, "--prompts", latin, "--store", tmp_path / "r.sqlite",
                                   "--samples", "1", "--lengths", "0k")[::2])
    assert f"prompt file {latin}, line 2: not UTF-8" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml", "latin.json"]


@pytest.mark.parametrize("bad, where", [
    (b'{"input": "a", "question": "b", "target": "c", "task": "qa1", "length": "0k"}\n{"input": oops}\n', "line 2: not valid JSON"),
    (b'{"input": "a", "question": "b", "target": "c", "task": "qa1", "length": "0k"}\n\n{"input": "caf\xe9"}\n', "line 3: not UTF-8"),
    (b'[1, 2]\n', "line 1: a record must be a JSON object"),
])
def test_bad_jsonl_data_names_file_and_line(capsys, tmp_path, bad, where):
    data = tmp_path / "d.jsonl"
    data.write_bytes(bad)
    line = one_error_line(*run_cli(capsys, "eval", "x", "--data", data, "--store", tmp_path / "r.sqlite")[::2])
    assert f"{data}, {where}" in line


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks a machine without CUDA")
@pytest.mark.parametrize("command", ["eval", "serve"])
def test_cuda_on_a_cpu_build_is_one_line(capsys, tmp_path, tiny_hf_dir, command):
    extra = ["--store", tmp_path / "r.sqlite", "--samples", "1", "--lengths", "0k"] if command == "eval" else []
    line = one_error_line(*run_cli(capsys, command, tiny_hf_dir, "--device", "cuda", *extra)[::2])
    assert "--device cuda:" in line and "use --device cpu" in line
    line = one_error_line(*run_cli(capsys, command, tiny_hf_dir, "--device", "gpu", *extra)[::2])
    assert "--device 'gpu' is not a device; allowed: cpu, cuda, cuda:N, mps" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flag", ["--png", "--markdown"])
def test_report_to_a_directory_is_one_line(capsys, tmp_path, store, flag):
    target = tmp_path / "plots"
    target.mkdir()
    before = snapshot(tmp_path)
    line = one_error_line(*run_cli(capsys, "report", store, flag, target)[::2])
    assert f"{flag} {target} is a directory; give a file name" in line
    assert snapshot(tmp_path) == before


def test_report_checks_every_output_before_writing_any(capsys, tmp_path, store):
    before = snapshot(tmp_path)
    line = one_error_line(*run_cli(capsys, "report", store, "--markdown", tmp_path / "r.md", "--png", tmp_path / "r.md")[::2])
    assert "--png" in line and "allowed: .png" in line
    assert snapshot(tmp_path) == before  # r.md was not written either


def test_report_follows_the_output_rule_like_generate(capsys, tmp_path, store):
    """Missing directories are created for every command's outputs, with the usual modes."""
    old = os.umask(0o022)
    try:
        code, _, err = run_cli(capsys, "report", store, "--markdown", tmp_path / "new" / "r.md",
                               "--png", tmp_path / "new" / "r.png")
        assert code == 0, err
        code, _, err = run_cli(capsys, "generate", "--samples", "1", "--out", tmp_path / "new2" / "d.jsonl")
        assert code == 0, err
    finally:
        os.umask(old)
    for path in (tmp_path / "new" / "r.md", tmp_path / "new" / "r.png", tmp_path / "new2" / "d.jsonl"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for args in (["report", store, "--markdown", blocker / "r.md"], ["generate", "--out", blocker / "d.jsonl"]):
        line = one_error_line(*run_cli(capsys, *args)[::2])
        assert "a_file is a file, so no directory can be made there" in line


def test_an_unreachable_hub_fails_at_once_without_retries(capsys, tmp_path, monkeypatch):
    """Offline (no HF_HUB_OFFLINE set), a hub name fails at once: huggingface_hub would otherwise
    retry each file five times with back-off (26-53 s) before failing."""
    import socket

    import huggingface_hub.constants

    import rmt.hub

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # a port nobody listens on: connections are refused
    port = sock.getsockname()[1]
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(rmt.hub, "_reachable", {})

    def no_backoff(seconds):
        raise AssertionError(f"slept {seconds} s: a retry with back-off")

    monkeypatch.setattr(time, "sleep", no_backoff)
    try:
        code, out, err = run_cli(capsys, "eval", "some-org/some-model", "--store", tmp_path / "r.sqlite",
                                 "--samples", "1", "--lengths", "0k")
    finally:
        sock.close()
    assert "unknown model 'some-org/some-model'" in one_error_line(code, err)
    assert "loading model some-org/some-model ..." in out  # said before the (silent) loading
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("default", [False, True], ids=["--cache", "default-cache"])
def test_a_cache_that_is_not_a_response_cache_is_refused_untouched(capsys, tmp_path, default):
    """--cache gets --store's protection: another program's SQLite database, or a file that is not
    SQLite, is one line before anything is read or written (it used to be modified, or a traceback);
    so is such a file where the default cache (STORE.endpoint-cache) would go."""
    db = tmp_path / ("r.sqlite.endpoint-cache" if default else "app.db")
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE users (name TEXT)")
    conn.close()
    notes = tmp_path / "notes.txt"
    notes.write_text("just text\n" * 200)
    endpoint = "openai:m@http://127.0.0.1:9/v1"
    cases = [(db, "is an SQLite database but not an endpoint response cache (its tables: users)")]
    if not default:
        cases.append((notes, "is not an endpoint response cache (SQLite said: file is not a database)"))
    for cache, message in cases:
        before = snapshot(tmp_path)
        args = [endpoint, "--store", tmp_path / "r.sqlite", "--samples", "1", "--lengths", "0k", "--retries", "0"]
        line = one_error_line(*run_cli(capsys, "eval", *args, *([] if default else ["--cache", cache]))[::2])
        assert f"--cache {cache} {message}" in line
        assert snapshot(tmp_path) == before
    line = one_error_line(*run_cli(capsys, "eval", endpoint, "--store", tmp_path / "x.sqlite", "--cache",
                                   tmp_path / "x.sqlite")[::2])
    assert "is the --store" in line


def test_the_response_cache_refuses_a_foreign_database(tmp_path):
    from rmt.evaluation.endpoint import ResponseCache

    db = tmp_path / "app.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE responses (id INTEGER, body TEXT)")  # the name, not the columns
    conn.close()
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match="app.db is an SQLite database but not an endpoint response cache"):
        ResponseCache(db)
    assert snapshot(tmp_path) == before
    cache = ResponseCache(tmp_path / "c.sqlite")
    cache.put("k", "kitchen")
    cache.close()
    assert ResponseCache(tmp_path / "c.sqlite").get("k") == "kitchen"  # its own file opens
