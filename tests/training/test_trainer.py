import json
import math
import re
import shutil

import pytest
import torch

from rmt.errors import UsageError
from rmt.training.checkpoint import latest_checkpoint, list_checkpoints
from rmt.training.config import TrainConfig
from rmt.training.tasks import TaskData, answer_accuracy
from rmt.training.trainer import Trainer, build_tokenizer, evaluate


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _metrics(out):
    """The metrics records without their timing (seconds_per_step differs from run to run)."""
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for record in records:
        record.pop("seconds_per_step", None)
    return records


def test_a_few_steps_lower_the_loss(tiny_config):
    cfg = tiny_config(curriculum=[1], stage_steps=25, eval_every=100, save_every=100, n_facts=[1, 1])
    trainer = Trainer(cfg)
    before = evaluate(trainer.model, trainer.data, 1, 16, 16)["loss"]
    trainer.train()
    after = evaluate(trainer.model, trainer.data, 1, 16, 16)["loss"]
    assert after < before - 0.5, (before, after)


def test_curriculum_moves_stages_and_writes_final(tiny_config, tmp_path):
    cfg = tiny_config(curriculum=[1, 2, 4], stage_steps=2, eval_every=100, vary_n_segments=False)
    summary = Trainer(cfg).train()
    assert summary["finished"] and summary["step"] == 6
    records = _metrics(tmp_path / "run")
    assert [r["finished_stage"] for r in records if r["type"] == "stage"] == [0, 1, 2]
    assert [r["segments"] for r in records if r["type"] == "train"] == [1, 1, 2, 2, 4, 4]
    assert [r["segments"] for r in records if r["type"] == "eval"] == [1, 2, 4]  # end of each stage


def test_checkpoint_loads_as_rmt_plus_autotokenizer(tiny_config, tmp_path):
    from transformers import AutoTokenizer

    from rmt import RecurrentMemoryTransformer

    trainer = Trainer(tiny_config(stage_steps=2))
    summary = trainer.train()
    model = RecurrentMemoryTransformer.from_pretrained(summary["final"])
    tok = AutoTokenizer.from_pretrained(summary["final"])
    assert tok("Where is Mary?")["input_ids"] == trainer.tokenizer("Where is Mary?")["input_ids"]
    batch = trainer.data.batch("eval", 0, 2, 2)
    with torch.no_grad():
        a = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        b = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.equal(a, b)


def test_resume_equals_uninterrupted_bitwise(tiny_config, tmp_path):
    full = Trainer(tiny_config(output_dir=str(tmp_path / "full")))
    full.train()
    part = Trainer(tiny_config(output_dir=str(tmp_path / "part")))
    part.train(stop_after=7)  # checkpoint at step 6; step 7 is lost, as after a crash
    assert latest_checkpoint(tmp_path / "part").name == "step-000006"
    resumed = Trainer(tiny_config(output_dir=str(tmp_path / "part")), resume=True)
    assert resumed.step == 6
    resumed.train()
    a, b = _weights(full.model), _weights(resumed.model)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _metrics(tmp_path / "full") == _metrics(tmp_path / "part")
    assert len(list_checkpoints(tmp_path / "part")) == 2  # older ones pruned


def test_resume_from_another_config_is_refused(tiny_config, tmp_path):
    Trainer(tiny_config(stage_steps=3)).train()
    with pytest.raises(ValueError, match=r"another config: segment_size=16 \(now 8\)"):
        Trainer(tiny_config(stage_steps=3, segment_size=8), resume=True)


def test_a_second_run_into_the_same_dir_never_overwrites(tiny_config, tmp_path):
    Trainer(tiny_config(stage_steps=3)).train()
    before = (latest_checkpoint(tmp_path / "run") / "model.safetensors").read_bytes()
    with pytest.raises(UsageError, match="already holds a run; pass --resume"):
        Trainer(tiny_config(stage_steps=3))
    assert (latest_checkpoint(tmp_path / "run") / "model.safetensors").read_bytes() == before


def test_a_failed_checkpoint_write_keeps_the_previous_one(tiny_config, tmp_path, monkeypatch):
    trainer = Trainer(tiny_config(stage_steps=10, save_every=3))
    trainer.train(stop_after=3)
    good = latest_checkpoint(tmp_path / "run")
    good_bytes = (good / "model.safetensors").read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(trainer.tokenizer, "save_pretrained", broken)
    with pytest.raises(OSError, match="disk full"):
        trainer.train(stop_after=3)
    assert latest_checkpoint(tmp_path / "run") == good
    assert (good / "model.safetensors").read_bytes() == good_bytes
    assert not [p for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.startswith(".")]


def test_no_memory_baseline_reads_the_last_window_of_longer_inputs(tiny_config):
    # Longer inputs are read through their last window (exactness is tested in test_window.py).
    trainer = Trainer(tiny_config(memory=False, stage_steps=2))
    trainer.train()
    assert trainer.window == 2 * 16
    inside = evaluate(trainer.model, trainer.data, 2, 4, 4, trainer.window)
    longer = evaluate(trainer.model, trainer.data, 4, 4, 4, trainer.window)
    assert not inside["truncated"] and longer["truncated"] and 0 <= longer["accuracy"] <= 1


@pytest.mark.parametrize("task", ["memorize", "detect", "reason", "qa2"])
def test_qa_tasks_put_the_loss_on_the_answer_only(tiny_config, task):
    cfg = tiny_config(task=task, n_facts=None if task != "qa2" else [2, 3])
    tok = build_tokenizer(cfg)
    data = TaskData(cfg, tok)
    batch = data.batch("train", 0, 4, 3)
    for ids, labels, answer in zip(batch["input_ids"], batch["labels"], batch["answer_mask"]):
        labelled = (labels != -100).nonzero().flatten().tolist()
        answer_pos = answer.nonzero().flatten().tolist()
        assert answer_pos and labelled == answer_pos + [answer_pos[-1] + 1]  # answer tokens + EOS
        assert ids[labelled[-1]] == tok.eos_token_id
        assert 3 * 16 < len(ids) <= 4 * 16 + 4
    if task == "memorize":  # the fact opens the input
        text = tok.decode(batch["input_ids"][0][:12])
        assert any(verb in text for verb in ("moved", "went", "travelled", "journeyed"))


def test_background_none_gives_the_facts_alone(tiny_config):
    # In-context QA (the 0k length): the input is the story's facts, question and answer, nothing else.
    cfg = tiny_config(task="qa2", n_facts=[2, 4], background="none")
    tok = build_tokenizer(cfg)
    data = TaskData(cfg, tok)
    records = data.records("train", 0, 4, 3)
    for record in records:
        assert record["background"] == "none" and record["input"] == " ".join(record["facts"])
        example = data.example(record, 4)
        assert example["trimmed"] == 0
        assert tok.decode(example["ids"][:example["question_start"]]) == tok.decode(tok(record["input"])["input_ids"])
    batch = data.batch("train", 0, 4, 3)
    assert int(batch["attention_mask"].sum(dim=1).max()) < 4 * 16  # not filled up to 4 segments


def test_background_none_is_refused_for_language_modelling(tiny_config):
    with pytest.raises(ValueError, match="background='none'"):
        tiny_config(task="lm", background="none")


def test_answer_accuracy_needs_every_answer_token():
    ids = torch.tensor([[5, 6, 7, 8]])
    answer = torch.tensor([[False, False, True, True]])
    logits = torch.zeros(1, 4, 10)
    logits[0, 1, 7] = logits[0, 2, 8] = 1.0
    assert answer_accuracy(logits, ids, answer).tolist() == [1.0]
    logits[0, 2, 8] = 0.0
    logits[0, 2, 3] = 1.0
    assert answer_accuracy(logits, ids, answer).tolist() == [0.0]


def test_lm_task_reports_perplexity_per_segment_position(tiny_config):
    trainer = Trainer(tiny_config(task="lm", stage_steps=2))
    trainer.train()
    result = trainer.evaluate(4, 4)
    assert len(result["perplexity_by_segment"]) == 4
    assert all(math.isfinite(p) and p > 1 for p in result["perplexity_by_segment"])
    assert abs(math.log(result["perplexity"]) - result["loss"]) < 1e-9


def test_the_saved_config_reproduces_the_run(tiny_config, tmp_path):
    import dataclasses

    from rmt.training.config import TrainConfig

    first = Trainer(tiny_config(stage_steps=3))
    first.train()
    saved = TrainConfig.from_file(tmp_path / "run" / "train_config.json")
    assert saved == first.cfg
    again = Trainer(dataclasses.replace(saved, output_dir=str(tmp_path / "again")))
    again.train()
    a, b = _weights(first.model), _weights(again.model)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_model_without_memory_trains_without_a_loss_type_warning(tiny_config, caplog):
    import logging

    from transformers.utils import logging as hf_logging

    hf_logging.warning_once.cache_clear()  # transformers warns once per process: forget earlier tests' warnings
    trainer = Trainer(tiny_config(memory=False, stage_steps=1))
    with caplog.at_level(logging.WARNING):
        trainer.train()
    assert trainer.model.loss_type == "ForCausalLM"
    assert not [r for r in caplog.records if "loss_type" in r.getMessage()]


@pytest.mark.parametrize("memory", [True, False])
def test_a_forward_pass_computes_only_the_logits_its_loss_reads(tiny_config, memory):
    """Training and evaluation compute the output layer only before label tokens: the same loss
    and, at those positions, the same logits as the full forward pass (so the same answers)."""
    from rmt.training.trainer import forward

    trainer = Trainer(tiny_config(stage_steps=1, memory=memory, curriculum=[1, 2]))
    trainer.model.eval()
    batch = trainer.data.batch("train", 0, 2, 4)
    # Row 0 without its first 5 tokens, right-padded: rows of two lengths, answers at two columns.
    fill = {"input_ids": 0, "attention_mask": 0, "labels": -100, "answer_mask": False}
    for key, value in batch.items():
        value[0] = torch.cat([value[0, 5:], torch.full((5,), fill[key], dtype=value.dtype)])
    lengths = batch["attention_mask"].sum(dim=1)
    assert len(set(lengths.tolist())) == 2
    with torch.no_grad():
        fast = forward(trainer.model, batch, trainer.window, memory=memory)
        full = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    assert abs(float(fast.loss) - float(full.loss)) <= 1e-5 * max(1.0, abs(float(full.loss)))
    before_label = (batch["labels"][:, 1:] != -100).any(dim=0).nonzero().flatten()
    assert set(before_label.tolist()) <= set(fast.positions.tolist())
    assert fast.logits.shape[1] == len(fast.positions) < full.logits.shape[1] // 2
    real = fast.positions[None, :] < lengths[:, None]  # padding positions are not compared
    assert torch.allclose(fast.logits[real], full.logits[:, fast.positions][real], atol=1e-5)
    assert torch.equal(answer_accuracy(fast.logits, batch["input_ids"], batch["answer_mask"], fast.positions),
                       answer_accuracy(full.logits, batch["input_ids"], batch["answer_mask"]))


def test_answer_accuracy_from_some_positions_needs_the_positions_of_every_answer_token():
    ids = torch.tensor([[1, 2, 3, 4]])
    answer = torch.tensor([[False, False, True, True]])
    logits = torch.zeros(1, 4, 6)
    logits[0, 1, 3] = logits[0, 2, 4] = 1.0  # position 1 predicts 3, position 2 predicts 4: right
    assert answer_accuracy(logits, ids, answer).tolist() == [1.0]
    assert answer_accuracy(logits[:, 1:3], ids, answer, torch.tensor([1, 2])).tolist() == [1.0]
    assert answer_accuracy(logits[:, 2:3], ids, answer, torch.tensor([2])).tolist() == [0.0]  # token 3 unscored


def test_every_train_record_says_the_seconds_per_step(tiny_config, tmp_path):
    Trainer(tiny_config(curriculum=[1], stage_steps=3, log_every=2, eval_every=100)).train()
    train = [r for r in _raw_metrics(tmp_path / "run") if r["type"] == "train"]
    assert [r["step"] for r in train] == [1, 2]
    assert all(isinstance(r["seconds_per_step"], float) for r in train)  # its value is the machine's business


def _raw_metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("memory_kind, memory", [("rmt", True), ("armt", True), ("rmt", False)])
def test_gradient_checkpointing_gives_the_same_gradients(tiny_config, tmp_path, memory_kind, memory):
    """--gradient-checkpointing recomputes every layer in the backward pass (counted) and changes no gradient."""
    from rmt.training.trainer import forward

    grads, calls = [], []
    for on in (False, True):
        cfg = tiny_config(arch="llama", n_layer=2, n_head=2, memory_kind=memory_kind, memory=memory,
                          gradient_checkpointing=on, output_dir=str(tmp_path / f"run-{on}"))
        trainer = Trainer(cfg)
        model = trainer.model
        base = model.base_model if memory else model
        if memory_kind == "armt":  # W_v = 0 writes nothing: give it trained-like values, so memory carries gradient
            with torch.no_grad():
                model.memory_kind.w_value.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))
        layer_calls, mlp = [], base.model.layers[0].mlp
        plain = mlp.forward  # counted inside the layer (module hooks do not run again in a recompute)
        mlp.forward = lambda x: (layer_calls.append(1), plain(x))[1]
        model.train()
        batch = trainer.data.batch("train", 0, 2, 4)
        forward(model, batch, trainer.window, memory).loss.backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
        calls.append(len(layer_calls))
    assert calls[1] > calls[0]  # the layers ran again in the backward pass
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        scale = max(1e-3, float(grads[0][name].abs().max()))
        assert float((grads[1][name] - grads[0][name]).abs().max()) <= 1e-5 * scale, name


def test_runs_of_other_mixed_precisions_in_one_process(tiny_config, tmp_path):
    """accelerate keeps one state per process; a bf16 run after an fp32 one (and back) gets its own precision."""
    for precision in ("no", "bf16", "no"):
        trainer = Trainer(tiny_config(mixed_precision=precision, output_dir=str(tmp_path / precision / "run"), stage_steps=1,
                                      curriculum=[1]))
        assert trainer.accelerator.mixed_precision == precision
        shutil.rmtree(tmp_path / precision)


def test_auto_mixed_precision_is_bf16_only_for_a_pretrained_model_where_bf16_is_native(monkeypatch):
    from rmt.training import optim
    from rmt.training.optim import resolve_mixed_precision

    scratch, pretrained = TrainConfig(), TrainConfig(model="some/model")
    assert scratch.mixed_precision == "auto"
    for native in (True, False):
        monkeypatch.setattr(optim, "native_bf16", lambda cuda, native=native: native)
        assert resolve_mixed_precision(scratch, cuda=False)[0] == "no"
        assert resolve_mixed_precision(pretrained, cuda=False)[0] == ("bf16" if native else "no")
        for asked in ("no", "bf16", "fp16"):  # what is asked for is kept
            assert resolve_mixed_precision(TrainConfig(model="some/model", mixed_precision=asked), cuda=False) == (asked, "asked")


def test_the_run_records_the_precision_auto_chose(tiny_config, tmp_path):
    trainer = Trainer(tiny_config(stage_steps=1, curriculum=[1]))
    saved = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert saved["mixed_precision"] == trainer.accelerator.mixed_precision == "no"  # from scratch: fp32


def test_memory_lr_is_the_rate_of_the_memory_parameters_only(tiny_config):
    trainer = Trainer(tiny_config(lr=1e-4, memory_lr=3e-3, memory_write="gated", stage_steps=1, curriculum=[1]))
    model = trainer.accelerator.unwrap_model(trainer.model)
    rate = {id(p): group["lr"] for group in trainer.optimizer.param_groups for p in group["params"]}
    names = dict(model.named_parameters())
    assert rate.keys() == {id(p) for p in names.values()}  # every parameter trained, once
    for name, p in names.items():
        assert rate[id(p)] == (3e-3 if name.startswith("memory_kind.") else 1e-4), name
    assert any(n.startswith("memory_kind.write_gate") for n in names)
    trainer.train()  # the scheduler scales both rates
    assert {round(g["lr"], 12) for g in trainer.optimizer.param_groups} == {1e-4, 3e-3}


def test_without_memory_lr_the_optimizer_has_the_groups_of_before(tiny_config):
    trainer = Trainer(tiny_config(stage_steps=1, curriculum=[1]))
    assert len(trainer.optimizer.param_groups) == 2  # earlier checkpoints' optimizer states load


def test_warmup_facts_shortens_the_first_training_stories_only():
    from rmt.training.tasks import TaskData

    cfg = TrainConfig.from_dict(dict(task="qa2", background="none", segment_size=256, warmup_facts=[2, 3], warmup_facts_steps=4))
    data = TaskData(cfg, build_tokenizer(TrainConfig(task="qa2", vocab_size=200)))
    facts = lambda split, index: [len(r["facts"]) for r in data.records(split, index, 1, 16)]  # noqa: E731
    for step in range(4):
        assert all(2 <= n <= 3 for n in facts("train", step))
    later = facts("train", 4) + facts("train", 5)
    assert max(later) > 3  # the task's own range again (qa2: 2-30 facts)
    assert facts("eval", 0) == [len(r["facts"]) for r in TaskData(TrainConfig.from_dict(dict(task="qa2", background="none", segment_size=256)),
                                                                   data.tok).records("eval", 0, 1, 16)]


@pytest.mark.parametrize("settings, needle", [
    (dict(warmup_facts=[2, 3]), "warmup_facts and warmup_facts_steps go together"),
    (dict(warmup_facts_steps=5), "warmup_facts and warmup_facts_steps go together"),
    (dict(warmup_facts=[3, 2], warmup_facts_steps=5), "warmup_facts must be [lo, hi]"),
    (dict(task="lm", warmup_facts=[2, 3], warmup_facts_steps=5), "warmup_facts is for the BABILong tasks"),
])
def test_bad_warmup_facts_are_one_clear_error(settings, needle):
    with pytest.raises(UsageError, match=re.escape(needle)):
        TrainConfig.from_dict(settings)
