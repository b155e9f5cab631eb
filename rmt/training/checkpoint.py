"""Atomic, resumable checkpoints.

Layout of a run's output dir::

    OUT/train_config.json          the run's settings (rmt train --config OUT/train_config.json)
    OUT/metrics.jsonl              one JSON object per logged step / evaluation
    OUT/checkpoints/step-000200/   model (RecurrentMemoryTransformer.save_pretrained) + tokenizer
                                   + optimizer.pt, scheduler.pt, rng.pt, trainer_state.json
    OUT/final/                     the trained model + tokenizer (what evaluation loads)

A checkpoint is written into a hidden temp dir beside its final name and renamed into place only
when complete, so a crash (even ``kill -9``) mid-write leaves the previous good checkpoint as the
newest one; the temp dir is swept away on the next run.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import torch

from rmt.atomic import atomic_dir

STATE_NAME = "trainer_state.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def save_model_dir(path: Path, model, tokenizer) -> None:
    """Model (RMT or plain HF) + tokenizer into ``path`` (which must exist)."""
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


def load_weights(model, path: Path) -> None:
    """Load the weights saved in ``path`` into the already-built ``model`` (same architecture)."""
    from rmt.memory import RecurrentMemoryTransformer

    if isinstance(model, RecurrentMemoryTransformer):
        from safetensors.torch import load_model

        load_model(model, str(Path(path) / "model.safetensors"))
    else:
        from transformers import AutoModelForCausalLM

        loaded = AutoModelForCausalLM.from_pretrained(path)
        model.load_state_dict(loaded.state_dict())



def rng_state() -> dict:
    return {"python": random.getstate(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])


def save_checkpoint(out_dir, step: int, model, tokenizer, optimizer, scheduler, trainer_state: dict, config,
                    keep: int = 2) -> Path:
    """Write ``OUT/checkpoints/step-<step>`` atomically; keep only the newest ``keep`` checkpoints."""
    ckpt_root = Path(out_dir) / "checkpoints"

    def write(tmp: Path):
        save_model_dir(tmp, model, tokenizer)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(rng_state(), tmp / "rng.pt")
        config.save(tmp / "train_config.json")
        (tmp / STATE_NAME).write_text(json.dumps(trainer_state, indent=2, sort_keys=True) + "\n")

    path = ckpt_root / f"step-{step:06d}"
    atomic_dir(path, write)
    for old in list_checkpoints(out_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def list_checkpoints(out_dir) -> list[Path]:
    """Complete checkpoints, oldest first (temp dirs of an interrupted write are not listed)."""
    root = Path(out_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and (p / STATE_NAME).is_file()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(out_dir) -> Path | None:
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def sweep_temp_dirs(out_dir) -> None:
    """Remove what an interrupted checkpoint write left behind."""
    root = Path(out_dir) / "checkpoints"
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(".") and (p.name.endswith(".tmp") or ".old-" in p.name):
                shutil.rmtree(p, ignore_errors=True)


def load_checkpoint(path: Path, model, optimizer, scheduler) -> dict:
    """Restore model, optimizer, scheduler and RNG from ``path``; returns the trainer state."""
    path = Path(path)
    load_weights(model, path)
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=False))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
    set_rng_state(torch.load(path / "rng.pt", weights_only=False))
    return json.loads((path / STATE_NAME).read_text())
