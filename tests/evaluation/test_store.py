"""Results store: resume/skip, scoring through rmt.babilong, versions, and a real kill -9."""

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from rmt.evaluation.evaluate import evaluate
from rmt.evaluation.store import Result, ResultsStore, StoreVersionError
from rmt.errors import UsageError

from .conftest import OracleRunner


def test_scores_come_from_babilong_and_rerun_skips(tmp_path, records_0k):
    store = tmp_path / "r.sqlite"
    runner = OracleRunner(wrong_every=3)
    summary = evaluate(runner, records_0k, store, progress=False)
    assert summary.done == len(records_0k) == runner.calls
    with ResultsStore(store) as s:
        rows = list(s.results())
    assert len(rows) == len(records_0k)
    # every 3rd answer is "nowhere": wrong under both rules; the others name the target
    assert sum(r.correct for r in rows) == len(records_0k) - len(records_0k) // 3
    assert all(r.correct == r.correct_strict for r in rows)
    assert {(r.task, r.length) for r in rows} == {("qa1", "0k"), ("qa2", "0k")}

    again = OracleRunner()
    summary = evaluate(again, records_0k, store, progress=False)
    assert (summary.done, summary.skipped, again.calls) == (0, len(records_0k), 0)


def test_changed_prompt_redoes_only_that_cell(tmp_path, records_0k):
    store = tmp_path / "r.sqlite"
    evaluate(OracleRunner(), records_0k, store, progress=False)
    changed = [dict(r) for r in records_0k]
    changed[1]["question"] = changed[1]["question"] + " "
    runner = OracleRunner()
    summary = evaluate(runner, changed, store, progress=False)
    assert (summary.done, summary.skipped) == (1, len(records_0k) - 1)
    with ResultsStore(store) as s:
        assert len(s) == len(records_0k)  # replaced, not duplicated


def test_duplicate_samples_are_refused(tmp_path, records_0k):
    with pytest.raises(ValueError, match="two records are sample 0 of qa1/0k"):
        evaluate(OracleRunner(), records_0k + records_0k[:1], tmp_path / "r.sqlite", progress=False)


def test_other_benchmark_version_is_one_clear_error(tmp_path):
    path = tmp_path / "r.sqlite"
    ResultsStore(path, benchmark_version="babilong-rmt-0").close()
    with pytest.raises(StoreVersionError, match="benchmark version 'babilong-rmt-0'.*use a new store file"):
        ResultsStore(path)
    with pytest.raises(UsageError, match="results store not found"):
        ResultsStore(tmp_path / "missing.sqlite", create=False)
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(ValueError, match="not a results store"):
        ResultsStore(tmp_path / "junk.sqlite")


def test_store_uses_wal_and_commits_each_answer(tmp_path):
    path = tmp_path / "r.sqlite"
    with ResultsStore(path) as s:
        s.put(Result("m", "qa1", "0k", "0", "h", "ok", "kitchen", "kitchen", 1, 1))
        # a second connection (another process would see the same) reads it before close
        other = sqlite3.connect(str(path))
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert other.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 1
        other.close()


KILL_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from conftest import OracleRunner
    from rmt.babilong import generate
    from rmt.evaluation.evaluate import evaluate
    records = generate(task="qa1", length="0k", samples=40, seed=1)
    runner = OracleRunner(delay=0.15)
    runner.batch_size = 1
    evaluate(runner, records, {store!r}, progress=False)
""")


def test_kill_9_loses_nothing_already_scored(tmp_path):
    from rmt.babilong import generate

    store = tmp_path / "r.sqlite"
    script = KILL_SCRIPT.format(tests=os.path.dirname(__file__), store=str(store))
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE)
    seen = 0
    deadline = time.monotonic() + 60
    try:
        while seen < 5:  # wait until a few answers are committed, as another reader sees them
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "subprocess made no progress"
            time.sleep(0.1)
            if store.exists():
                try:
                    db = sqlite3.connect(str(store), timeout=5)
                    seen = db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
                    db.close()
                except sqlite3.OperationalError:
                    seen = 0  # schema not created yet
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL

    with ResultsStore(store) as s:
        kept = list(s.results())
        assert s._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert len(kept) >= seen  # everything committed before the kill survived
    assert all(r.correct == 1 and r.output for r in kept)

    records = generate(task="qa1", length="0k", samples=40, seed=1)
    runner = OracleRunner()
    summary = evaluate(runner, records, store, progress=False)
    assert summary.skipped == len(kept) and summary.done == 40 - len(kept) == runner.calls


def test_batches_hold_records_of_about_one_length(tmp_path, records_0k, records_1k):
    """Rows are padded to a batch's longest, so short and long records are not batched together."""
    class Recorder(OracleRunner):
        batches: list = []

        def answer(self, records):
            self.batches.append(sorted(r["length"] for r in records))
            return super().answer(records)

    runner = Recorder()
    mixed = [records_1k[0], records_0k[0], records_1k[1], records_0k[1]]  # long, short, long, short
    summary = evaluate(runner, mixed, tmp_path / "r.sqlite", progress=False)
    assert runner.batches == [["0k", "0k"], ["1k", "1k"]]
    assert summary.done == 4
