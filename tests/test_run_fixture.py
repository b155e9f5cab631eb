"""A run directory written by rmt 0.1.0 still loads, through every command's way in.

``tests/fixtures/run-0.1.0`` is the output of (the code of commit 95473fa, 4 steps, ~180 KB)::

    rmt train --task qa1 --vocab-size 64 --n-layer 1 --n-embd 16 --n-head 2 --num-mem-tokens 2
              --segment-size 16 --curriculum 1,2 --stage-steps 2 --batch-size 2 --save-every 2
              --eval-every 2 --eval-samples 2 --eval-batch-size 2 --log-every 1 --output-dir RUN

(its older checkpoint, step 2, removed to keep it small). ``expected.json`` holds what that code
computed from it: the token ids of one sentence, the tokenizer's pad token and the logits of the
last position, for ``final/`` and for ``checkpoints/step-000004``.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch

FIXTURE = Path(__file__).parent / "fixtures" / "run-0.1.0"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())


def _logits(model, tokenizer, text):
    ids = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        return model(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"]).logits


@pytest.mark.parametrize("sub", ["final", "checkpoints/step-000004"])
def test_saved_model_and_tokenizer_load_as_written(sub):
    from rmt import RecurrentMemoryTransformer, runs

    located = runs.locate(FIXTURE / sub)
    assert located.rmt and located.model_dir == FIXTURE / sub
    tokenizer = runs.load_tokenizer(located.model_dir)
    model = RecurrentMemoryTransformer.from_pretrained(located.model_dir).eval()
    want = EXPECTED[sub]
    assert tokenizer(EXPECTED["text"])["input_ids"] == want["input_ids"]
    assert (tokenizer.pad_token, tokenizer.eos_token) == (want["pad_token"], want["eos_token"])
    logits = _logits(model, tokenizer, EXPECTED["text"])
    assert torch.allclose(logits[0, -1], torch.tensor(want["logits_last"]), atol=1e-4)


def test_run_dir_resolves_to_its_final_model_and_config():
    from rmt import runs
    from rmt.training.config import TrainConfig

    located = runs.locate(FIXTURE)
    assert located.rmt and located.model_dir == FIXTURE / "final"
    assert located.train_config == FIXTURE / "train_config.json"
    assert runs.locate(FIXTURE / "checkpoints" / "step-000004").train_config == \
        FIXTURE / "checkpoints" / "step-000004" / "train_config.json"
    cfg = TrainConfig.from_file(located.train_config)
    assert (cfg.task, cfg.rmt.num_mem_tokens, cfg.rmt.segment_size) == ("qa1", 2, 16)


def test_eval_loads_the_run_dir():
    from rmt.evaluation.evaluate import load_local_model
    from rmt.evaluation.prompting import resolve_style

    model = load_local_model(str(FIXTURE), device="cpu")
    assert Path(model.name) == FIXTURE / "final"
    assert resolve_style("auto", str(FIXTURE)) == "plain"  # trained by rmt train: its own prompt format
    want = EXPECTED["final"]
    logits = _logits(model.model, model.tokenizer, EXPECTED["text"])
    assert torch.allclose(logits[0, -1], torch.tensor(want["logits_last"]), atol=1e-4)


def test_diagnose_finds_the_checkpoint_and_its_config():
    from rmt.training.diagnose import find_checkpoint

    assert find_checkpoint(FIXTURE) == (FIXTURE / "final", FIXTURE / "train_config.json")
    step = FIXTURE / "checkpoints" / "step-000004"
    assert find_checkpoint(step) == (step, step / "train_config.json")


def test_training_resumes_from_its_checkpoint(tmp_path):
    from rmt.training.config import TrainConfig
    from rmt.training.trainer import Trainer

    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    cfg = TrainConfig.from_file(run / "train_config.json")
    cfg.output_dir = str(run)
    trainer = Trainer(cfg, resume=True)
    assert trainer.step == 4
    assert trainer.tokenizer(EXPECTED["text"])["input_ids"] == EXPECTED["final"]["input_ids"]
    model = trainer.accelerator.unwrap_model(trainer.model).eval()
    logits = _logits(model, trainer.tokenizer, EXPECTED["text"])
    want = EXPECTED["checkpoints/step-000004"]
    assert torch.allclose(logits[0, -1], torch.tensor(want["logits_last"]), atol=1e-4)


def test_training_continues_from_the_run_as_model(tmp_path):
    """``rmt train --model RUN``: the run's final model and tokenizer are the start."""
    from rmt.training.config import TrainConfig
    from rmt.training.trainer import Trainer

    cfg = TrainConfig.from_file(FIXTURE / "train_config.json")
    cfg.output_dir, cfg.model = str(tmp_path / "more"), str(FIXTURE)
    trainer = Trainer(cfg)
    assert trainer.tokenizer(EXPECTED["text"])["input_ids"] == EXPECTED["final"]["input_ids"]
    logits = _logits(trainer.accelerator.unwrap_model(trainer.model).eval(), trainer.tokenizer, EXPECTED["text"])
    assert torch.allclose(logits[0, -1], torch.tensor(EXPECTED["final"]["logits_last"]), atol=1e-4)
