"""ARMT through the commands: `rmt train --memory-kind armt` trains every task; `rmt eval` and
`rmt serve` load its checkpoint dir with no extra flags."""

import json
import subprocess
import sys

import pytest
import torch

from rmt.training.config import TASKS, TrainConfig
from rmt.training.trainer import Trainer

TINY = dict(n_facts=None, segment_size=16, num_mem_tokens=2, n_layer=1, n_embd=32, n_head=2, curriculum=[1, 2],
            stage_steps=2, batch_size=4, lr=3e-3, eval_every=100, eval_samples=4, eval_batch_size=4, save_every=100,
            log_every=1, threads=1, progress=False, vary_n_segments=False)


@pytest.mark.parametrize("task", TASKS)
def test_armt_trains_on_every_task(task, tmp_path):
    cfg = TrainConfig.from_dict(dict(TINY, task=task, memory_kind="armt", output_dir=str(tmp_path / "run")))
    trainer = Trainer(cfg)
    kind = trainer.model.memory_kind
    before = kind.w_value.detach().clone()
    summary = trainer.train()
    assert summary["finished"] and summary["history"][-1]["segments"] == 2
    assert torch.isfinite(torch.tensor(summary["history"][-1]["loss"]))
    assert not torch.equal(kind.w_value.detach(), before)  # the associative memory is being trained


def test_train_config_memory_kind_and_its_old_spelling(tmp_path):
    assert TrainConfig.from_dict(dict(self_retrieval=True)).rmt.memory_kind == "rmt-r"
    assert "self_retrieval" not in TrainConfig.from_dict(dict(memory_kind="armt")).to_dict()
    with pytest.raises(ValueError, match="unknown memory_kind 'gru'; allowed: rmt, rmt-r, armt"):
        TrainConfig.from_dict(dict(memory_kind="gru"))
    with pytest.raises(ValueError, match="conflicts with memory_kind='armt'"):
        TrainConfig.from_dict(dict(memory_kind="armt", self_retrieval=True))
    # a saved v0.1 run config (self_retrieval, no memory_kind) still loads, and resumes as RMT-R
    old = TrainConfig.from_dict(dict(self_retrieval=True)).to_dict()
    del old["memory_kind"]
    old["self_retrieval"] = True
    assert TrainConfig.from_dict(old).resume_mismatch(TrainConfig.from_dict(dict(memory_kind="rmt-r"))) == []
    assert TrainConfig.from_dict(old).resume_mismatch(TrainConfig.from_dict(dict(memory_kind="armt"))) == ["memory_kind", "self_retrieval"]


@pytest.fixture(scope="module")
def armt_run(tmp_path_factory):
    """`rmt train --memory-kind armt` from the command line (the flag comes from TrainConfig)."""
    out = tmp_path_factory.mktemp("armt") / "run"
    args = ["train", "--memory-kind", "armt", "--task", "qa1", "--segment-size", "16", "--num-mem-tokens", "2",
            "--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--curriculum", "1,2", "--stage-steps", "2",
            "--batch-size", "4", "--eval-samples", "4", "--eval-batch-size", "4", "--threads", "1", "--no-progress",
            "--output-dir", str(out)]
    result = subprocess.run([sys.executable, "-m", "rmt", *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["finished"]
    return out


def test_eval_and_serve_load_an_armt_checkpoint_with_no_flags(armt_run, tmp_path):
    from rmt import RecurrentMemoryTransformer
    from rmt.babilong import generate
    from rmt.evaluation.endpoint import EndpointClient, EndpointRunner
    from rmt.evaluation.evaluate import evaluate, load_runner
    from rmt.serving.server import create_app, serve_in_thread

    records = generate(task="qa1", length="0k", samples=3, seed=0)
    runner = load_runner(str(armt_run), max_new_tokens=4)  # the run dir: its final model
    assert runner.model.model.config.memory_kind == "armt"
    answers = runner.answer(records)
    assert all(a.status == "ok" for a in answers)
    model = RecurrentMemoryTransformer.from_pretrained(armt_run / "final").eval()
    for record, answer in zip(records, answers):
        ids = runner.model.encode(runner.prompt(record))
        new = model.generate(input_ids=torch.tensor([ids]), max_new_tokens=4, eos_token_id=runner.model.tokenizer.eos_token_id)
        assert answer.output == runner.model.decode(new[0])
    summary = evaluate(runner, records, tmp_path / "r.sqlite", progress=False)
    assert summary.done == len(records)
    with serve_in_thread(create_app(runner.model, "armt")) as url:
        client = EndpointClient(url, "armt", max_tokens=4, cache=None)
        remote = EndpointRunner(client)
        assert [a.output for a in remote.answer(records)] == [a.output for a in answers]
        client.close()


def test_unknown_memory_kind_on_the_command_line_is_one_error_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "rmt", "train", "--memory-kind", "lstm", "--output-dir", str(tmp_path / "x")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["error: unknown memory_kind 'lstm'; allowed: rmt, rmt-r, armt"]
