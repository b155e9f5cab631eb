"""Local model runners on tiny models: HF causal LM (with and without chat template) and RMT."""

import pytest
import torch

from rmt.evaluation.base import LocalRunner
from rmt.evaluation.evaluate import evaluate, load_runner
from rmt.evaluation.hf import HFModel
from rmt.evaluation.store import ResultsStore


def test_hf_prompt_is_the_benchmark_prompt(tiny_hf_dir, records_0k):
    from rmt.babilong.prompts import format_prompt

    runner = load_runner(str(tiny_hf_dir))
    assert not runner.model.has_chat_template
    assert runner.prompt(records_0k[0]) == format_prompt(records_0k[0])


def test_hf_chat_template_is_used(tiny_chat_dir, records_0k):
    from rmt.babilong.prompts import format_messages

    runner = load_runner(str(tiny_chat_dir))
    record = records_0k[0]
    messages = runner.prompt(record)
    assert messages == format_messages(record)
    ids = runner.model.encode(messages)
    tok = runner.model.tokenizer
    assert ids[0] == tok.convert_tokens_to_ids("<|user|>")
    assert ids[-1] == tok.convert_tokens_to_ids("<|assistant|>")


def test_hf_batched_equals_one_by_one_greedy(tiny_hf_dir, records_0k):
    model = HFModel(str(tiny_hf_dir))
    runner = LocalRunner(model, batch_size=8, max_new_tokens=6)
    batched = runner.answer(records_0k)
    single = [runner.answer([r])[0] for r in records_0k]
    assert [a.output for a in batched] == [a.output for a in single]
    assert all(a.status == "ok" and a.n_tokens > 0 for a in batched)
    # and equal to a plain HF greedy generate of the same prompt
    ids = model.encode(runner.prompt(records_0k[2]))
    ref = model.model.generate(torch.tensor([ids]), max_new_tokens=6, do_sample=False,
                               pad_token_id=model.tokenizer.pad_token_id)
    assert single[2].output == model.decode(ref[0, len(ids):])


def test_hf_over_window_is_recorded_not_truncated(tiny_hf_dir, records_0k, records_1k, tmp_path):
    runner = load_runner(str(tiny_hf_dir), max_new_tokens=5)  # tiny GPT-2 window: 512 tokens
    records = records_0k[:2] + records_1k
    summary = evaluate(runner, records, tmp_path / "r.sqlite", progress=False)
    assert summary.over_window == len(records_1k)
    with ResultsStore(tmp_path / "r.sqlite") as s:
        rows = {(r.length, r.sample_id): r for r in s.results()}
    for r in records_1k:
        row = rows[("1k", str(r["sample"]))]
        assert row.status == "over_window" and row.output is None and row.correct is None
        assert row.n_tokens > 512
    assert all(rows[("0k", str(r["sample"]))].status == "ok" for r in records_0k[:2])


def test_rmt_checkpoint_streams_past_the_base_window(tiny_rmt_dir, records_1k, tmp_path):
    from rmt import RecurrentMemoryTransformer
    from rmt.evaluation.rmt_runner import RMTModel

    runner = load_runner(str(tiny_rmt_dir), max_new_tokens=4)
    assert isinstance(runner.model, RMTModel) and runner.model.window is None
    answers = runner.answer(records_1k)
    assert all(a.status == "ok" and a.n_tokens > 512 for a in answers)  # longer than the GPT-2 window
    # same as the RMT's own generate on the same prompt, one row at a time
    model = RecurrentMemoryTransformer.from_pretrained(tiny_rmt_dir).eval()
    for record, answer in zip(records_1k, answers):
        ids = runner.model.encode(runner.prompt(record))
        new = model.generate(input_ids=torch.tensor([ids]), max_new_tokens=4,
                             eos_token_id=runner.model.tokenizer.eos_token_id)
        assert answer.output == runner.model.decode(new[0])
    summary = evaluate(runner, records_1k, tmp_path / "r.sqlite", progress=False)
    assert summary.done == len(records_1k) and summary.over_window == 0


def test_unknown_model_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown model '/no/such/model'"):
        load_runner("/no/such/model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="cannot load model"):
        load_runner(str(tmp_path / "empty"))


def test_rmt_train_checkpoints_get_the_training_format(tiny_rmt_dir, tmp_path, records_0k):
    """`rmt train` teaches `input question answer`: its checkpoints (with train_config.json) are
    asked `input question` by default; --prompt benchmark/plain override."""
    import shutil

    record = records_0k[0]
    assert load_runner(str(tiny_rmt_dir)).prompt(record) != f"{record['input']} {record['question']}"
    trained = tmp_path / "step-000010"
    shutil.copytree(tiny_rmt_dir, trained)
    (trained / "train_config.json").write_text("{}")
    assert load_runner(str(trained)).prompt(record) == f"{record['input']} {record['question']}"
    assert load_runner(str(trained), prompt_style="benchmark").prompt(record) != f"{record['input']} {record['question']}"
    # a run's output dir: OUT/train_config.json + OUT/final/ (model + tokenizer)
    run = tmp_path / "run"
    shutil.copytree(tiny_rmt_dir, run / "final")
    (run / "train_config.json").write_text("{}")
    for spec in (run, run / "final"):
        runner = load_runner(str(spec))
        assert str(runner.model.name) == str(run / "final")
        assert runner.prompt(record) == f"{record['input']} {record['question']}"
    with pytest.raises(ValueError, match="unknown prompt style 'fancy'; allowed: auto, benchmark, plain"):
        load_runner(str(trained), prompt_style="fancy")


def test_checkpoint_written_by_rmt_train(tmp_path, records_1k):
    """Integration with issue 4: a real (few-step) `rmt train` run is evaluated from its output dir,
    with the training format and no window."""
    import os
    import subprocess
    import sys

    out = tmp_path / "run"
    train = subprocess.run(
        [sys.executable, "-m", "rmt", "train", "--task", "qa1", "--curriculum", "1", "--stage-steps", "2",
         "--batch-size", "2", "--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--eval-every", "2",
         "--eval-samples", "2", "--save-every", "2", "--output-dir", str(out), "--no-progress"],
        capture_output=True, text=True, timeout=240, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert train.returncode == 0, train.stderr[-2000:]
    runner = load_runner(str(out), max_new_tokens=3)
    assert str(runner.model.name) == str(out / "final") and runner.model.window is None
    assert runner.prompt(records_1k[0]) == f"{records_1k[0]['input']} {records_1k[0]['question']}"
    summary = evaluate(runner, records_1k, tmp_path / "r.sqlite", progress=False)
    assert summary.done == len(records_1k) and summary.over_window == 0
