"""The public API other rooms build on: generate / score / prompts / io."""

import json

import pytest

from rmt.babilong import TASK_LABELS, generate, score
from rmt.babilong.io import load_records, save_records
from rmt.babilong.prompts import format_messages, format_prompt


def test_generate_record_fields_and_lengths():
    records = generate(task="qa1", length="2k", samples=3, seed=0)
    assert len(records) == 3
    for r in records:
        for key in ("input", "question", "target", "task", "length", "n_tokens", "seed", "supporting_offsets"):
            assert key in r
        assert r["task"] == "qa1" and r["length"] == "2k" and r["seed"] == 0
        assert r["target"] in TASK_LABELS["qa1"]
        # named lengths leave the reference's 300-token prompt allowance
        assert abs(r["n_tokens"] - 1700) <= 60


def test_int_length_is_exact_token_budget():
    records = generate(task="qa2", length=512, samples=2, seed=1)
    for r in records:
        assert r["length"] == "512" and r["prompt_allowance"] == 0
        assert abs(r["n_tokens"] - 512) <= 60


def test_zero_length_is_facts_alone():
    (r,) = generate(task="qa1", length="0k", samples=1, seed=3)
    assert r["input"] == " ".join(r["facts"])


def test_prompt_parts_switch_off():
    (r,) = generate(task="qa1", length="0k", samples=1, seed=0)
    full = format_prompt(r)
    assert "<context>\n" + r["input"] + "\n</context>" in full
    assert full.endswith("Question: " + r["question"])
    bare = format_prompt(r, instruction=False, examples=False, post_prompt=False, context_tags=False)
    assert bare == r["input"] + "\n\nQuestion: " + r["question"]
    messages = format_messages(r)
    assert messages == [{"role": "user", "content": full}]


def test_prompt_file_overrides(tmp_path):
    (r,) = generate(task="qa1", length="0k", samples=1, seed=0)
    path = tmp_path / "p.yaml"
    path.write_text("qa1:\n  instruction: READ THIS\n  examples: ''\n")
    text = format_prompt(r, prompts=str(path))
    assert text.startswith("READ THIS\n\nAnswer with one word")
    (tmp_path / "p.json").write_text(json.dumps({"qa1": {"bogus": "x"}}))
    with pytest.raises(ValueError, match="bogus"):
        format_prompt(r, prompts=str(tmp_path / "p.json"))


@pytest.mark.parametrize("name, content, message", [
    ("p.yaml", b"qa1:\n  instruction: [unclosed\n", "p.yaml, line 3: not valid YAML"),
    ("p.json", b'{"qa1":\n {"instruction": oops}}\n', "p.json, line 2: not valid JSON"),
    ("p.json", b'{"qa1":\n {"instruction": "caf\xe9"}}\n', "p.json, line 2: not UTF-8"),
])
def test_a_bad_prompt_file_is_one_line_naming_file_and_line(tmp_path, name, content, message):
    (r,) = generate(task="qa1", length="0k", samples=1, seed=0)
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ValueError) as caught:
        format_prompt(r, prompts=str(tmp_path / name))
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("name, fmt", [("out.jsonl", None), ("out.parquet", None), ("out_layout", None),
                                       ("out_hf", "hf")])
def test_save_load_roundtrip(tmp_path, name, fmt):
    records = generate(task="qa2", length="1k", samples=2, seed=0)
    path = tmp_path / name
    assert save_records(records, path, fmt) == 2
    assert load_records(path) == records
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temp files left behind


def test_public_rows_become_records():
    from rmt.babilong.public import public_to_records

    rows = [{"input": "Mary went to the office. Text.", "question": "Where is Mary?", "target": "office"}]
    (r,) = public_to_records(rows, "qa1", "4k")
    assert (r["input"], r["question"], r["target"]) == tuple(rows[0].values())
    assert r["task"] == "qa1" and r["length"] == "4k" and r["target_tokens"] == 4000
    assert score("office", r["target"], r["question"], r["task"])
