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


def test_hf_over_window_is_read_as_the_last_window(tiny_chat_dir, records_0k, records_1k, tmp_path):
    """An input longer than the window: the haystack is cut from the left until the templated
    prompt + the answer fit; instruction, question and template are kept; the answer is stored
    as "truncated" with the whole input's token count."""
    from rmt.babilong.prompts import format_messages

    runner = load_runner(str(tiny_chat_dir), max_new_tokens=5)  # tiny GPT-2 window: 512 tokens
    record = records_1k[0]
    full = runner.model.encode(runner.prompt(record))
    assert len(full) > 512
    ids = runner.last_window(record)
    assert 512 - 5 - 3 <= len(ids) <= 512 - 5  # as much haystack as fits, within a few tokens
    tok = runner.model.tokenizer
    assert ids[0] == tok.convert_tokens_to_ids("<|user|>") and ids[-1] == tok.convert_tokens_to_ids("<|assistant|>")
    empty = runner.model.encode(format_messages({**record, "input": ""}))
    tag = tok.convert_tokens_to_ids(["<", "context", ">"])
    head = next(i for i in range(len(empty)) if empty[i:i + 3] == tag) + 3  # ... <context>
    tail = len(empty) - head  # </context> Question: ... <|assistant|>
    assert ids[:head] == empty[:head] == full[:head] and ids[-tail:] == empty[-tail:] == full[-tail:]
    kept = ids[head:-tail]  # the end of the haystack
    assert len(kept) > 300 and full[len(full) - tail - len(kept):len(full) - tail] == kept

    records = records_0k[:2] + records_1k
    summary = evaluate(runner, records, tmp_path / "r.sqlite", progress=False)
    assert summary.over_window == 0 and summary.truncated == len(records_1k) and summary.done == len(records)
    with ResultsStore(tmp_path / "r.sqlite") as s:
        rows = {(r.length, r.sample_id): r for r in s.results()}
    for r in records_1k:
        row = rows[("1k", str(r["sample"]))]
        assert row.status == "truncated" and row.output is not None and row.correct in (0, 1)
        assert row.n_tokens > 512  # the whole input, not what was read
    assert all(rows[("0k", str(r["sample"]))].status == "ok" for r in records_0k[:2])
    # the answer is the model's answer to the cut prompt
    assert runner.answer([record])[0].output == runner.model.generate([ids], 5)[0]


def test_hf_over_window_without_truncation(tiny_hf_dir, records_1k):
    runner = load_runner(str(tiny_hf_dir), max_new_tokens=5)
    runner.truncate = False
    answers = runner.answer(records_1k)
    assert all(a.status == "over_window" and a.output is None and a.n_tokens > 512 for a in answers)


def test_a_prompt_that_does_not_fit_even_without_haystack_is_over_window(tiny_hf_dir, records_1k):
    runner = load_runner(str(tiny_hf_dir), max_new_tokens=500)  # 500 + instruction > 512
    assert runner.last_window(records_1k[0]) is None
    assert runner.answer(records_1k[:1])[0].status == "over_window"


def test_chat_template_off_and_on(tiny_chat_dir, tiny_hf_dir, records_0k):
    from rmt.babilong.prompts import format_prompt

    on = load_runner(str(tiny_chat_dir))
    off = load_runner(str(tiny_chat_dir), chat_template=False)
    record = records_0k[0]
    assert on.prompt_set == "builtin, chat template" and on.name == str(tiny_chat_dir)
    assert off.prompt_set == "builtin, no chat template" and off.name == f"{tiny_chat_dir} (no chat template)"
    assert off.prompt(record) == format_prompt(record) and isinstance(on.prompt(record), list)
    tok = off.model.tokenizer
    assert tok.convert_tokens_to_ids("<|assistant|>") not in off.model.encode(off.prompt(record))
    plain = load_runner(str(tiny_hf_dir))  # no template: nothing to say, named as before
    assert plain.prompt_set == "builtin" and plain.name == str(tiny_hf_dir)
    with pytest.raises(ValueError, match="has no chat template"):
        load_runner(str(tiny_hf_dir), chat_template=True)


def test_generation_stops_at_any_eos_of_the_generation_config(wordy_chat_dir):
    """An instruct model's end of turn is in generation_config.eos_token_id (maybe a list), not
    always the tokenizer's eos: decoding stops at each, and none is in the text."""
    model = HFModel(str(wordy_chat_dir))
    tok = model.tokenizer
    ids = model.encode([{"role": "user", "content": "Mary went to the kitchen. Where is Mary?"}])
    ((free, _),) = model.generate_ids([ids], 6)
    assert len(free) == 6, free
    stop = free[2]  # a token the model generates: declare it an end token
    model.model.generation_config.eos_token_id = [stop, tok.eos_token_id]
    assert model.eos_ids() == {stop, tok.eos_token_id}
    ((cut, hit), ) = model.generate_ids([ids], 6)
    assert hit and cut == free[:free.index(stop)]
    assert model.generate([ids], 6)[0] == model.decode(free[:free.index(stop)])


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
