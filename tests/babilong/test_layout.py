"""The public dataset layout: `rmt generate` writes what `datasets.load_dataset(folder, name, split)`
reads, and everything that reads records reads it back."""

import json
import subprocess
import sys

import datasets
import pytest
import yaml

from rmt.babilong import generate
from rmt.babilong.io import load_records, save_records
from rmt.babilong.layout import is_layout, read_layout


def _records(tasks=("qa1", "qa2"), lengths=("0k", "1k"), samples=3):
    return [r for length in lengths for task in tasks for r in generate(task=task, length=length, samples=samples, seed=5)]


def test_folder_loads_with_datasets_by_length_and_task(tmp_path):
    records = _records()
    assert save_records(iter(records), tmp_path / "set") == len(records)
    folder = tmp_path / "set"
    assert datasets.get_dataset_config_names(str(folder)) == ["0k", "1k"]
    assert datasets.get_dataset_split_names(str(folder), "1k") == ["qa1", "qa2"]
    # A fresh cache: the user-wide one can hold an older "set" of the same file names and sizes.
    ds = datasets.load_dataset(str(folder), name="1k", split="qa2", cache_dir=str(tmp_path / "cache"))
    want = [r for r in records if (r["task"], r["length"]) == ("qa2", "1k")]
    assert ds.column_names[:3] == ["input", "question", "target"]
    assert ds.to_list() == want  # every field survives, in order
    whole = datasets.load_dataset(str(folder), name="0k", cache_dir=str(tmp_path / "cache"))
    assert sorted(whole) == ["qa1", "qa2"] and whole["qa1"]["target"] == [r["target"] for r in records[:3]]


def test_card_metadata(tmp_path):
    save_records(_records(lengths=("0k",)), tmp_path / "set", card={"seed": 5})
    text = (tmp_path / "set" / "README.md").read_text()
    meta = yaml.safe_load(text.split("---")[1])
    assert meta["configs"] == [{"config_name": "0k", "data_files": [
        {"split": "qa1", "path": "0k/qa1-*.parquet"}, {"split": "qa2", "path": "0k/qa2-*.parquet"}]}]
    assert meta["dataset_info"][0]["splits"][0]["name"] == "qa1"
    assert meta["dataset_info"][0]["splits"][0]["num_examples"] == 3
    assert meta["language"] == ["en"] and "question-answering" in meta["task_categories"]
    assert "- seed: `5`" in text and 'load_dataset("path/to/this/folder", name="0k", split="qa1")' in text
    assert sorted(p.name for p in (tmp_path / "set" / "0k").iterdir()) == [
        "qa1-00000-of-00001.parquet", "qa2-00000-of-00001.parquet"]  # the public file names


def test_round_trip_and_partial_read(tmp_path):
    records = _records()
    save_records(records, tmp_path / "set")
    assert load_records(tmp_path / "set") == records
    part = read_layout(tmp_path / "set", tasks=["qa2"], lengths=["1k"])
    assert part == [r for r in records if (r["task"], r["length"]) == ("qa2", "1k")]


def test_million_token_length_names(tmp_path):
    # 1M/10M are config names the public sets lack; the name is what matters here, so write tiny
    # records labelled with them rather than generating a million tokens in the default suite.
    records = [{"input": "x", "question": "Where is Mary?", "target": "garden", "task": "qa1", "length": n}
               for n in ("1M", "10M")]
    save_records(records, tmp_path / "set")
    assert datasets.get_dataset_config_names(str(tmp_path / "set")) == ["1M", "10M"]
    assert datasets.load_dataset(str(tmp_path / "set"), name="10M", split="qa1",
                                 cache_dir=str(tmp_path / "cache"))["target"] == ["garden"]


def test_public_snapshot_without_card_is_read(tmp_path):
    """A local copy of the public repo laid out as LENGTH/TASK-*.parquet (no configs in a card)."""
    (tmp_path / "pub" / "4k").mkdir(parents=True)
    rows = [{"input": "Mary went to the garden.", "question": "Where is Mary?", "target": "garden"}]
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "pub" / "4k" / "qa1-00000-of-00001.parquet"))
    assert is_layout(tmp_path / "pub")
    assert read_layout(tmp_path / "pub") == [{**rows[0], "task": "qa1", "length": "4k", "sample": 0}]


def test_cli_writes_the_layout_by_default(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rmt", "generate", "--tasks", "qa1,qa3", "--lengths", "0k", "--samples", "2",
                           "--out", str(tmp_path / "d")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert datasets.get_dataset_split_names(str(tmp_path / "d"), "0k") == ["qa1", "qa3"]
    # the old spellings still work: --task and --facts LO-HI
    proc = subprocess.run([sys.executable, "-m", "rmt", "generate", "--task", "qa1", "--facts", "2-3", "--samples", "2", "--out",
                           str(tmp_path / "a.jsonl")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert all(2 <= len(json.loads(l)["facts"]) <= 3 for l in (tmp_path / "a.jsonl").read_text().splitlines())
