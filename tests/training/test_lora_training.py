"""`rmt train --lora-rank`: adapters on a frozen pretrained base (a tiny Llama saved like a hub
model), --grad-accum, and exact resume, also after `kill -9`."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rmt.training.config import TrainConfig
from rmt.training.trainer import Trainer
from tests.cli_util import run_cli

ROOT = Path(__file__).resolve().parents[2]
SMALL = dict(task="qa1", n_facts=[1, 2], segment_size=16, num_mem_tokens=2, curriculum=[1, 2], stage_steps=4,
             batch_size=4, lr=3e-3, eval_every=4, eval_samples=4, eval_batch_size=4, save_every=3, log_every=1,
             threads=1, progress=False, vary_n_segments=True, mixed_precision="no")


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """A tiny pretrained Llama (2 layers, width 32) with a word-level tokenizer, saved as a hub model is."""
    import transformers

    from rmt.training.tasks import TaskData
    from rmt.training.tokenizer import train_word_tokenizer

    path = tmp_path_factory.mktemp("base")
    tokenizer = train_word_tokenizer(TaskData(TrainConfig.from_dict({k: SMALL[k] for k in ("task", "n_facts", "segment_size")})).corpus(seed=0), 300)
    torch.manual_seed(0)
    config = transformers.LlamaConfig(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=32,
                                      intermediate_size=64, max_position_embeddings=256, vocab_size=len(tokenizer),
                                      bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                                      pad_token_id=tokenizer.pad_token_id)
    transformers.LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _config(tmp_path, base_dir, name="run", **overrides):
    return TrainConfig.from_dict({**SMALL, "model": str(base_dir), "lora_rank": 4, "output_dir": str(tmp_path / name), **overrides})


def _trainable(model) -> dict:
    model = getattr(model, "module", model)
    return {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}


@pytest.mark.parametrize("memory_kind", ["rmt", "armt"])
def test_a_lora_run_keeps_the_base_bit_identical_and_saves_only_what_trains(tmp_path, base_dir, memory_kind):
    from rmt.runs import load_causal_lm

    trainer = Trainer(_config(tmp_path, base_dir, memory_kind=memory_kind))
    before = _trainable(trainer.model)
    summary = trainer.train()
    assert summary["finished"]
    after = _trainable(trainer.model)
    assert any(not torch.equal(before[k], after[k]) for k in before if "lora_B" in k)  # the adapters trained
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("memory_kind."))

    loaded = load_causal_lm(base_dir).state_dict()
    trained_base = trainer.model.base_model.state_dict()
    for name, tensor in loaded.items():
        # peft keeps the wrapped layer's weight as `<layer>.base_layer.weight`
        key = name if name in trained_base else name.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
        assert torch.equal(trained_base[key], tensor), name

    final = Path(summary["final"])
    assert not (final / "model.safetensors").exists()
    weights = final / "adapter_model.safetensors"
    assert weights.stat().st_size < 0.5 * sum(p.stat().st_size for p in base_dir.glob("*.safetensors"))
    meta = json.loads((final / "rmt_config.json").read_text())["adapter"]
    assert meta["base"]["name"] == str(base_dir.resolve()) and meta["lora"] == {"rank": 4, "alpha": 32.0, "dropout": 0.0, "targets": []}


def test_the_adapter_run_evaluates_like_the_model_it_trained(tmp_path, base_dir):
    from rmt import RecurrentMemoryTransformer
    from rmt.training.trainer import evaluate

    trainer = Trainer(_config(tmp_path, base_dir))
    trainer.train()
    loaded = RecurrentMemoryTransformer.from_pretrained(tmp_path / "run" / "final")  # merged
    assert not loaded.has_adapters
    a = evaluate(trainer.model, trainer.data, 2, 8, batch_size=4)
    b = evaluate(loaded, trainer.data, 2, 8, batch_size=4)
    assert a["accuracy"] == b["accuracy"] and abs(a["loss"] - b["loss"]) <= 1e-5 * max(1.0, abs(a["loss"]))


def test_rmt_eval_loads_the_adapter_run(tmp_path, base_dir, capsys):
    Trainer(_config(tmp_path, base_dir)).train()
    code, stdout, err = run_cli(capsys, "eval", tmp_path / "run", "--tasks", "qa1", "--lengths", "64", "--samples", "2",
                                "--max-new-tokens", "2", "--store", tmp_path / "results.sqlite", "--no-progress")
    assert code == 0, err[-2000:]
    assert "2 answered" in stdout


def test_resume_of_a_lora_run_equals_uninterrupted_bitwise(tmp_path, base_dir):
    full = Trainer(_config(tmp_path, base_dir, "full"))
    full.train()
    part = Trainer(_config(tmp_path, base_dir, "part"))
    part.train(stop_after=5)  # checkpoint at step 3; steps 4-5 are redone after the resume
    resumed = Trainer(_config(tmp_path, base_dir, "part"), resume=True)
    assert resumed.step == 3
    resumed.train()
    a, b = _trainable(full.model), _trainable(resumed.model)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    losses = [[r["loss"] for r in map(json.loads, (tmp_path / name / "metrics.jsonl").read_text().splitlines())
               if r["type"] == "train"] for name in ("full", "part")]
    assert losses[0] == losses[1]


@pytest.mark.parametrize("lora_rank", [0, 4])
def test_grad_accum_equals_one_batch_of_that_size(tmp_path, base_dir, lora_rank):
    """batch 8 in one piece vs 4 x 2 micro-batches: the same weights after 3 steps up to float
    rounding (no dropout: a micro-batch draws its own masks)."""
    settings = dict(lora_rank=lora_rank, lora_dropout=0.0, curriculum=[2], stage_steps=3, save_every=100, eval_every=100,
                    n_facts=[1, 3], **({} if lora_rank else {"model": None, "n_layer": 1, "n_embd": 32, "n_head": 2}))
    one = Trainer(_config(tmp_path, base_dir, "one", batch_size=8, **settings))
    one.train()
    two = Trainer(_config(tmp_path, base_dir, "two", batch_size=4, grad_accum=2, **settings))
    two.train()
    a, b = _trainable(one.model), _trainable(two.model)
    assert a.keys() == b.keys()
    for key in a:
        scale = max(1.0, float(a[key].abs().max()))
        assert float((a[key] - b[key]).abs().max()) <= 1e-4 * scale, key


def _train_command(out, base_dir, *extra):
    return [sys.executable, "-m", "rmt", "train", "--model", str(base_dir), "--lora-rank", "4", "--task", "qa1",
            "--n-facts", "1,2", "--segment-size", "16", "--num-mem-tokens", "2", "--curriculum", "1,2",
            "--stage-steps", "10", "--batch-size", "4", "--lr", "3e-3", "--eval-every", "100", "--save-every", "2",
            "--log-every", "1", "--threads", "1", "--mixed-precision", "no", "--no-progress", "--output-dir", str(out), *extra]


def _losses(run: Path) -> list:
    return [(r["step"], r["loss"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
            if r["type"] == "train"]


def test_resume_after_kill_9_continues_the_same_loss_curve(tmp_path, base_dir):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    reference = tmp_path / "reference"
    subprocess.run(_train_command(reference, base_dir), check=True, env=env, capture_output=True, timeout=600)
    expected = _losses(reference)
    assert [step for step, _ in expected] == list(range(1, 21))

    run = tmp_path / "killed"
    rng = random.Random(0)
    for attempt in range(3):  # killed at random moments: inside a step, during a checkpoint write, ...
        process = subprocess.Popen(_train_command(run, base_dir, *(["--resume"] if attempt else [])), env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list((run / "checkpoints").glob("step-*")) and process.poll() is None:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.5))
        process.send_signal(signal.SIGKILL)
        process.wait()
    subprocess.run(_train_command(run, base_dir, "--resume"), check=True, env=env, capture_output=True, timeout=600)
    assert _losses(run) == expected
