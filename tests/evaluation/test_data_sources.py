"""`rmt eval --data` reads every shape a BABILong set comes in: our public-layout folder, a local
snapshot of the public repo, a saved DatasetDict (one public config: split = task), JSONL."""

import datasets
import pytest

from rmt.babilong import generate
from rmt.babilong.io import save_records
from rmt.evaluation.evaluate import load_records_for_eval

from .conftest import OracleRunner


def _set():
    return [r for length in ("0k", "1k") for task in ("qa1", "qa2")
            for r in generate(task=task, length=length, samples=3, seed=2)]


def test_public_layout_folder(tmp_path):
    records = _set()
    save_records(records, tmp_path / "set")
    got = load_records_for_eval(["qa2", "qa1"], ["1k"], samples=2, data=tmp_path / "set")
    assert [(r["task"], r["length"], r["sample"]) for r in got] == [("qa2", "1k", 0), ("qa2", "1k", 1),
                                                                    ("qa1", "1k", 0), ("qa1", "1k", 1)]
    assert got[0] == next(r for r in records if (r["task"], r["length"], r["sample"]) == ("qa2", "1k", 0))
    with pytest.raises(ValueError, match="no samples for qa3/1k; it has: qa1/0k, qa1/1k, qa2/0k, qa2/1k"):
        load_records_for_eval(["qa3"], ["1k"], samples=2, data=tmp_path / "set")


def test_saved_dataset_dict_of_one_public_config(tmp_path):
    """What `load_dataset("RMT-team/babilong", "1k").save_to_disk(DIR)` leaves: splits qa1, qa2 and
    only the public columns. Before: AttributeError: 'DatasetDict' object has no attribute 'to_list'."""
    records = [r for r in _set() if r["length"] == "1k"]
    public = datasets.DatasetDict({task: datasets.Dataset.from_list(
        [{k: r[k] for k in ("input", "question", "target")} for r in records if r["task"] == task])
        for task in ("qa1", "qa2")})
    public.save_to_disk(str(tmp_path / "dd"))
    got = load_records_for_eval(["qa1", "qa2"], ["1k"], samples=3, data=tmp_path / "dd")
    assert [(r["task"], r["length"], r["target"]) for r in got] == [(r["task"], "1k", r["target"]) for r in records]
    with pytest.raises(ValueError, match="does not say the length.*--lengths 0k"):
        load_records_for_eval(["qa1"], ["0k", "1k"], samples=3, data=tmp_path / "dd")
    # and the records score: an oracle answering the target is right on every one
    from rmt.evaluation.evaluate import evaluate

    summary = evaluate(OracleRunner(), got, tmp_path / "r.sqlite", progress=False)
    assert summary.accuracy() == 1.0


def test_eval_cli_on_a_layout_folder(tmp_path, tiny_hf_dir):
    import subprocess
    import sys

    save_records(_set(), tmp_path / "set")
    proc = subprocess.run([sys.executable, "-m", "rmt", "eval", str(tiny_hf_dir), "--data", str(tmp_path / "set"),
                           "--tasks", "qa1,qa2", "--lengths", "0k", "--samples", "2", "--store",
                           str(tmp_path / "r.sqlite"), "--max-new-tokens", "2", "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "4 answered" in proc.stdout
