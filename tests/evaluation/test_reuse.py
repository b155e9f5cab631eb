"""A stored answer is reused only when everything that made it is the same: the weights (a content
fingerprint), the decoding settings, the prompt; its score is always the current rule's."""

import json
import shutil
import sqlite3

import pytest

from rmt.evaluation.evaluate import evaluate, load_runner
from rmt.evaluation.store import ResultsStore, read_results
from tests.cli_util import run_cli

from .conftest import OracleRunner, build_gpt2, build_tokenizer


@pytest.fixture
def model_dir(tmp_path, tiny_hf_dir):
    """A copy of the tiny GPT-2 that a test may save other weights over."""
    return shutil.copytree(tiny_hf_dir, tmp_path / "model")


def error_line(code, err) -> str:
    """The one error line of a failed command (after whatever loading bars transformers drew)."""
    lines = [line for line in err.strip().splitlines() if "Loading weights" not in line]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def rows(store):
    with ResultsStore(store) as s:
        return sorted((r.task, r.length, r.sample_id, r.output, r.correct, getattr(r, "producer", None)) for r in s.results())


def test_weights_saved_over_the_same_path_are_not_reused(model_dir, tmp_path, records_0k):
    store = tmp_path / "r.sqlite"
    first = evaluate(load_runner(str(model_dir), max_new_tokens=3), records_0k, store, progress=False)
    assert first.done == len(records_0k)
    again = evaluate(load_runner(str(model_dir), max_new_tokens=3), records_0k, store, progress=False)
    assert (again.done, again.skipped) == (0, len(records_0k))  # same weights, same settings: reused
    before = rows(store)

    build_gpt2(build_tokenizer(), seed=1).save_pretrained(model_dir)  # re-initialised, same path
    with pytest.raises(ValueError, match=r"were made with other weights \(stored sha256:\w+, now sha256:\w+\).*"
                                         r"neither reused nor replaced.*--store.*--name"):
        evaluate(load_runner(str(model_dir), max_new_tokens=3), records_0k, store, progress=False)
    assert rows(store) == before  # nothing replaced

    fresh = evaluate(load_runner(str(model_dir), max_new_tokens=3), records_0k, tmp_path / "new.sqlite", progress=False)
    assert fresh.done == len(records_0k)


def test_other_decoding_settings_are_refused_in_one_line(capsys, model_dir, tmp_path):
    """The issue's case: `--max-new-tokens 1` after 20 printed "0 answered, 5 already done"."""
    store = tmp_path / "r.sqlite"
    args = ["eval", model_dir, "--tasks", "qa1", "--lengths", "0k", "--samples", "2", "--store", store, "--no-progress"]
    code, out, err = run_cli(capsys, *args, "--max-new-tokens", "20")
    assert code == 0 and "2 answered, 0 already done" in out, err
    before = rows(store)
    line = error_line(*run_cli(capsys, *args, "--max-new-tokens", "1")[::2])
    assert "holds 2 answer(s)" in line and "other decoding settings (max_new_tokens 20 -> 1)" in line
    line = error_line(*run_cli(capsys, *args, "--max-new-tokens", "20", "--dtype", "bfloat16")[::2])
    assert "dtype 'float32' -> 'bfloat16'" in line
    assert rows(store) == before
    code, out, err = run_cli(capsys, *args, "--max-new-tokens", "20")
    assert code == 0 and "0 answered, 2 already done" in out, err
    code, out, err = run_cli(capsys, *args, "--max-new-tokens", "1", "--name", "short")
    assert code == 0 and "2 answered, 0 already done" in out, err


def test_reused_answers_are_scored_by_the_current_rule(tmp_path, records_0k, monkeypatch):
    store = tmp_path / "r.sqlite"
    evaluate(OracleRunner(), records_0k, store, progress=False)
    assert all(r.correct == 1 for r in read_results([store]))

    import rmt.babilong

    monkeypatch.setattr(rmt.babilong, "score", lambda output, mode="official", **kw: False)  # another rule
    runner = OracleRunner()
    summary = evaluate(runner, records_0k, store, progress=False)
    assert runner.calls == 0 and summary.skipped == len(records_0k)  # not asked again ...
    assert all(r.correct == 0 and r.correct_strict == 0 for r in read_results([store]))  # ... but scored again
    assert summary.rescored == len(records_0k)
    monkeypatch.undo()

    relabelled = [dict(r) for r in records_0k]
    relabelled[0]["target"] = "nowhere"  # a fixed label: same prompt, other target
    summary = evaluate(OracleRunner(), relabelled, store, progress=False)
    got = {(r.task, r.sample_id): r for r in read_results([store])}
    assert got[("qa1", "0")].target == "nowhere" and got[("qa1", "0")].correct == 0
    assert sum(r.correct for r in got.values()) == len(records_0k) - 1
    assert summary.rescored == len(records_0k)  # the rule is back, and one target changed


OLD_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE results (model TEXT NOT NULL, task TEXT NOT NULL, length TEXT NOT NULL, sample_id TEXT NOT NULL,
    prompt_hash TEXT NOT NULL, status TEXT NOT NULL, output TEXT, target TEXT, correct INTEGER,
    correct_strict INTEGER, n_tokens INTEGER, seconds REAL, created REAL NOT NULL, prompt_set TEXT,
    PRIMARY KEY (model, task, length, sample_id));
INSERT INTO meta VALUES ('schema_version', '1'), ('benchmark_version', 'babilong-rmt-1'), ('created', '0');
"""


def old_store(path, records, runner):
    """A store as the rmt before producers were recorded wrote it: its answers of ``runner``."""
    from rmt.evaluation.evaluate import sample_ids
    from rmt.evaluation.store import prompt_hash

    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    for record, sid in zip(records, sample_ids(records)):
        db.execute("INSERT INTO results VALUES (?, ?, ?, ?, ?, 'ok', ?, ?, 1, 1, NULL, 0.1, 1.0, 'builtin')",
                   (runner.name, record["task"], record["length"], sid, prompt_hash(runner.prompt_key(record)),
                    record["target"], record["target"]))
    db.commit()
    db.close()


def test_a_store_from_before_producers_still_opens_and_is_never_trusted(capsys, tmp_path, records_0k):
    store = tmp_path / "old.sqlite"
    old_store(store, records_0k, OracleRunner())
    assert len(read_results([store])) == len(records_0k)  # it opens, its results read
    code, out, err = run_cli(capsys, "report", store)
    assert code == 0 and "oracle" in out, err

    runner = OracleRunner()
    with pytest.raises(ValueError, match=r"holds 6 answer\(s\) of 'oracle'.*written by an older rmt that did not "
                                         r"record the weights and decoding settings.*give a new store"):
        evaluate(runner, records_0k, store, progress=False)
    assert runner.calls == 0
    # another model in the same store is fine, and its answers record their producer
    summary = evaluate(OracleRunner(name="other"), records_0k, store, progress=False)
    assert summary.done == len(records_0k)
    by_model = {}
    for r in read_results([store]):
        by_model.setdefault(r.model, set()).add(r.producer)
    assert by_model == {"oracle": {None}, "other": {"{}"}}


def endpoint_runner(url, model="tiny", max_tokens=5, name="served"):
    """An endpoint runner whose client answers "kitchen" without a network (the store side is tested)."""
    from rmt.evaluation.endpoint import EndpointClient, EndpointRunner

    class Answering(EndpointClient):
        def chat_many(self, conversations):
            return ["kitchen" for _ in conversations]

    return EndpointRunner(Answering(url, model, max_tokens=max_tokens), name=name)


def test_an_endpoint_is_its_model_name_and_base_url(tmp_path, records_0k):
    store = tmp_path / "r.sqlite"
    evaluate(endpoint_runner("http://a.example/v1"), records_0k, store, progress=False)
    assert evaluate(endpoint_runner("http://a.example/v1/"), records_0k, store, progress=False).skipped == len(records_0k)
    for other, what in ((endpoint_runner("http://b.example/v1"), "stored openai:tiny@http://a.example/v1, "
                                                                   "now openai:tiny@http://b.example/v1"),
                        (endpoint_runner("http://a.example/v1", model="big"), "now openai:big@"),
                        (endpoint_runner("http://a.example/v1", max_tokens=1), "max_tokens 5 -> 1")):
        with pytest.raises(ValueError, match=what):
            evaluate(other, records_0k, store, progress=False)


def test_the_endpoint_cache_key_holds_everything_that_makes_the_answer():
    from rmt.evaluation.endpoint import EndpointClient

    messages = [{"role": "user", "content": "Where is Mary?"}]
    base = EndpointClient("http://a.example/v1", "tiny", max_tokens=5)
    key = base.cache_key(messages)
    assert EndpointClient("http://a.example/v1/", "tiny", max_tokens=5).cache_key(messages) == key
    for other in (EndpointClient("http://b.example/v1", "tiny", max_tokens=5),
                  EndpointClient("http://a.example/v1", "big", max_tokens=5),
                  EndpointClient("http://a.example/v1", "tiny", max_tokens=1)):
        assert other.cache_key(messages) != key
    assert base.cache_key([{"role": "user", "content": "Where is John?"}]) != key
    # the decoding settings the store records are exactly those the cache key holds
    from rmt.evaluation.endpoint import EndpointRunner

    identity = EndpointRunner(base).identity()
    assert identity == {"weights": "openai:tiny@http://a.example/v1", "decoding": {"max_tokens": 5, "temperature": 0.0}}


# ----------------------------------------------------------------------------- the fingerprint
def test_fingerprint_reads_a_file_once_until_it_changes(tmp_path, monkeypatch, tiny_hf_dir):
    from rmt import fingerprint

    monkeypatch.setenv("RMT_CACHE", str(tmp_path / "cache"))
    folder = shutil.copytree(tiny_hf_dir, tmp_path / "m")
    reads = []
    real = fingerprint.file_sha256
    monkeypatch.setattr(fingerprint, "file_sha256", lambda path: reads.append(path.name) or real(path))

    first = fingerprint.weights_fingerprint(folder)
    assert first.startswith("sha256:") and "model.safetensors" in reads
    reads.clear()
    assert fingerprint.weights_fingerprint(folder) == first and reads == []  # from the cache: nothing read
    assert (tmp_path / "cache" / fingerprint.CACHE_FILE).is_file()

    build_gpt2(build_tokenizer(), seed=1).save_pretrained(folder)  # same size, new contents
    second = fingerprint.weights_fingerprint(folder)
    assert second != first and "model.safetensors" in reads
    (folder / ".hidden").write_text("not part of the model")
    assert fingerprint.weights_fingerprint(folder) == second


def test_a_cached_conversion_is_fingerprinted_by_its_manifest(tmp_path, monkeypatch, tiny_hf_dir):
    from rmt import models
    from rmt import fingerprint

    monkeypatch.setenv("RMT_CACHE", str(tmp_path / "cache"))
    folder = models.models_dir() / "tiny"
    shutil.copytree(tiny_hf_dir, folder)
    models._write_manifest(folder, {"test": True})
    plain = fingerprint.directory_fingerprint(tiny_hf_dir)  # the same files, hashed
    monkeypatch.setattr(fingerprint, "file_sha256", lambda path: pytest.fail(f"read {path}"))
    assert fingerprint.weights_fingerprint(folder) == plain  # the manifest's table, nothing read
    assert json.loads((folder / models.MANIFEST_FILE).read_text())["files"]
