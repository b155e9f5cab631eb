"""`rmt train` on the real pretrained model (SmolLM2-135M-Instruct, the registered name
``smollm2-135m``): the whole path a user takes (train -> checkpoint -> `rmt eval` -> `rmt serve`),
and one step each under bf16 autocast on CPU (ARMT) and with activation checkpointing (RMT-R), so
every memory kind trains through `rmt train` on it. Short segments, batches of 2, a step or two:
about a minute on 2 shared cores, half of it writing the checkpoints (540 MB of weights, 1 GB of
optimizer state)."""

import json
import math

import pytest
import torch

from rmt.training.config import TrainConfig
from rmt.training.trainer import Trainer
from tests.cli_util import run_cli

FAST = ["--task", "qa1", "--segment-size", "32", "--num-mem-tokens", "4", "--batch-size", "2",
        "--eval-samples", "2", "--eval-batch-size", "2", "--no-vary-n-segments", "--log-every", "1", "--no-progress"]


def test_train_then_eval_then_serve_the_checkpoint(smollm2, tmp_path, capsys):
    openai = pytest.importorskip("openai")
    from rmt.evaluation.evaluate import load_local_model
    from rmt.serving.server import create_app, serve_in_thread

    out = tmp_path / "run"
    code, stdout, err = run_cli(capsys, "train", "--model", "smollm2-135m", *FAST, "--curriculum", "1,2",
                                "--stage-steps", "1", "--output-dir", out)
    assert code == 0, err[-2000:]
    assert json.loads(stdout.strip().splitlines()[-1])["finished"]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["type"] == "train"]
    assert [r["segments"] for r in train] == [1, 2] and all(math.isfinite(r["loss"]) for r in train)
    assert all("seconds_per_step" in r for r in train)
    final = out / "final"
    assert json.loads((final / "rmt_config.json").read_text())["rmt_config"]["num_mem_tokens"] == 4

    store = tmp_path / "results.sqlite"
    code, stdout, err = run_cli(capsys, "eval", out, "--tasks", "qa1", "--lengths", "64", "--samples", "2",
                                "--max-new-tokens", "4", "--store", store, "--no-progress")
    assert code == 0, err[-2000:]
    assert "2 answered" in stdout

    model = load_local_model(str(out))  # what `rmt serve OUT` loads
    assert type(model).__name__ == "RMTModel"
    messages = [{"role": "user", "content": "Mary went to the kitchen. Where is Mary?"}]
    with serve_in_thread(create_app(model, "rmt-smollm2")) as url:
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
        reply = client.chat.completions.create(model="rmt-smollm2", max_tokens=4, temperature=0, messages=messages)
    ids = model.encode(messages)
    # Two steps of training may well answer with EOS at once: what is checked is that the server
    # answers with this checkpoint's own greedy answer.
    assert reply.choices[0].message.content == model.generate([ids], 4)[0]
    assert reply.usage.prompt_tokens == len(ids) and reply.choices[0].finish_reason in ("stop", "length")


def _one_step(tmp_path, **settings):
    """One optimizer step of `rmt train --model smollm2-135m` over 2 segments (nothing saved); the
    loss of the step and the dtype of layer 0's MLP output in it."""
    cfg = TrainConfig.from_dict(dict(model="smollm2-135m", task="qa1", segment_size=32, num_mem_tokens=4, batch_size=2,
                      curriculum=[2], stage_steps=2, vary_n_segments=False, eval_every=100, save_every=100,
                      log_every=1, progress=False, output_dir=str(tmp_path / "run"), **settings))
    trainer = Trainer(cfg)
    layer = trainer.accelerator.unwrap_model(trainer.model).base_model.model.layers[0]
    dtypes = []
    layer.mlp.down_proj.register_forward_hook(lambda module, args, output: dtypes.append(output.dtype))
    trainer.train(stop_after=1)
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    return record, dtypes, layer


def test_one_bf16_step_on_cpu(smollm2, tmp_path):
    record, dtypes, _ = _one_step(tmp_path, mixed_precision="bf16", memory_kind="armt")
    assert record["segments"] == 2 and math.isfinite(record["loss"])
    assert dtypes and set(dtypes) == {torch.bfloat16}  # accelerate's autocast, on CPU too


def test_one_step_with_gradient_checkpointing(smollm2, tmp_path):
    record, dtypes, layer = _one_step(tmp_path, gradient_checkpointing=True, memory_kind="rmt-r", mixed_precision="no")
    assert record["segments"] == 2 and math.isfinite(record["loss"])
    assert layer.gradient_checkpointing and set(dtypes) == {torch.float32}


def test_one_lora_step_writes_a_small_run_that_loads_onto_the_base(smollm2, tmp_path, capsys):
    """`rmt train --model smollm2-135m --lora-rank 8`: a run of a few MB (no base weights) that
    loads as base + adapter, its fingerprint checked, and evaluates."""
    from rmt import RecurrentMemoryTransformer

    out = tmp_path / "run"
    # RMT with gated writes: 3.1M trained parameters. (ARMT adds 14.6M of its own - a hidden x hidden
    # value projection per layer - so its runs are ~60 MB of weights and ~120 MB of optimizer state.)
    code, stdout, err = run_cli(capsys, "train", "--model", "smollm2-135m", "--lora-rank", "8", "--memory-write", "gated",
                                *FAST, "--curriculum", "2", "--stage-steps", "1", "--save-every", "1",
                                "--mixed-precision", "no", "--output-dir", out)
    assert code == 0, err[-2000:]
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert size < 60 * 2**20, size  # the base alone is 540 MB
    assert not list(out.rglob("model.safetensors"))
    model = RecurrentMemoryTransformer.from_pretrained(out / "final")
    assert not model.has_adapters and model.base.name == "smollm2-135m" and model.base.fingerprint.startswith("sha256:")
    kept = RecurrentMemoryTransformer.from_pretrained(out / "checkpoints" / "step-000001", merge_adapters=False)
    trained = {n for n, p in kept.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in n or n.startswith("memory_kind.") for n in trained)
