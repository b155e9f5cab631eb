"""Atomic, resumable checkpoints.

The files of a run's output dir and of a checkpoint are named in ``rmt.runs``.

A checkpoint is written into a hidden temp dir beside its final name and renamed into place only
when complete, so a crash (even ``kill -9``) mid-write leaves the previous good checkpoint as the
newest one; the temp dir is swept away on the next run.
"""

from __future__ import annotations

import json
import random
import shutil
import zipfile
from pathlib import Path

import torch
from safetensors.torch import load_model
from transformers import AutoModelForCausalLM
from transformers.utils import logging as hf_logging

from rmt import runs
from rmt.atomic import atomic_dir
from rmt.errors import UsageError
from rmt.memory import RecurrentMemoryTransformer
from rmt.runs import TRAINER_STATE_FILE as STATE_NAME


def save_model_dir(path: Path, model, tokenizer) -> None:
    """Model (RMT or plain HF) + tokenizer into ``path`` (which must exist)."""
    # HF draws a "Writing model shards" bar even for one small shard: noise between our own bars.
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(path)
    finally:
        if enabled:
            hf_logging.enable_progress_bar()
    tokenizer.save_pretrained(path)


def load_weights(model, path: Path) -> None:
    """Load the weights saved in ``path`` into the already-built ``model`` (same architecture)."""
    if isinstance(model, RecurrentMemoryTransformer) and model.has_adapters:
        model.load_trained(Path(path) / runs.ADAPTER_WEIGHTS_FILE)  # only what trains was saved
    elif isinstance(model, RecurrentMemoryTransformer):
        load_model(model, str(Path(path) / runs.WEIGHTS_FILE))
    else:
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

    def write(tmp: Path):
        save_model_dir(tmp, model, tokenizer)
        torch.save(optimizer.state_dict(), tmp / runs.OPTIMIZER_FILE)
        torch.save(scheduler.state_dict(), tmp / runs.SCHEDULER_FILE)
        torch.save(rng_state(), tmp / runs.RNG_FILE)
        config.save(tmp / runs.TRAIN_CONFIG_FILE)
        (tmp / STATE_NAME).write_text(json.dumps(trainer_state, indent=2, sort_keys=True) + "\n")

    path = runs.step_dir(out_dir, step)
    atomic_dir(path, write)
    for old in list_checkpoints(out_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def list_checkpoints(out_dir) -> list[Path]:
    """Complete checkpoints, oldest first (temp dirs of an interrupted write are not listed)."""
    root = Path(out_dir) / runs.CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := runs.STEP_DIR.match(p.name)) and (p / STATE_NAME).is_file()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(out_dir) -> Path | None:
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def sweep_temp_dirs(out_dir) -> None:
    """Remove what an interrupted checkpoint write left behind."""
    root = Path(out_dir) / runs.CHECKPOINTS_DIR
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(".") and p.name.endswith((".tmp", ".old")):
                shutil.rmtree(p, ignore_errors=True)


def _check_safetensors(path: Path) -> None:
    """A safetensors file is an 8-byte header length, a JSON header, then the tensor bytes the
    header's offsets point to: a file cut short by a full disk or a copy is shorter than that."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise UsageError(f"{path} is truncated ({size} bytes)")
        n = int.from_bytes(head, "little")
        if n > size - 8:
            raise UsageError(f"{path} is truncated ({size} bytes; its header alone needs {n + 8})")
        try:
            header = json.loads(f.read(n))
            end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
        except (ValueError, KeyError, TypeError, IndexError):
            raise UsageError(f"{path} is damaged (its header is not valid)") from None
    if size < 8 + n + end:
        raise UsageError(f"{path} is truncated ({size} bytes of {8 + n + end})")


def verify_checkpoint(path) -> dict:
    """Read enough of checkpoint ``path`` to know it is whole; return its trainer state. One-line
    ValueError naming the damaged file otherwise (no tensors are loaded: this is cheap)."""
    path = Path(path)
    state = None
    for file in sorted(path.glob("*.json")):
        try:
            value = json.loads(file.read_bytes().decode("utf-8"))
        except UnicodeDecodeError:
            raise UsageError(f"{file} is damaged (not UTF-8 text)") from None
        except json.JSONDecodeError as exc:
            raise UsageError(f"{file} is damaged (not valid JSON: {exc.msg}, line {exc.lineno})") from None
        if file.name == STATE_NAME:
            state = value
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise UsageError(f"{path / STATE_NAME} is damaged (no step number in it)")
    for file in sorted(path.glob("*.safetensors")):
        _check_safetensors(file)
    for name in runs.RESUME_FILES:
        file = path / name
        if not file.is_file():
            raise UsageError(f"{file} is missing")
        try:  # torch.save writes a zip archive; a cut one has no central directory at its end
            zipfile.ZipFile(file).close()
        except (zipfile.BadZipFile, OSError):
            raise UsageError(f"{file} is damaged (not a complete torch file)") from None
    return state


def resumable_checkpoint(out_dir, log=None) -> Path | None:
    """The newest checkpoint that is whole. Damaged newer ones (a full disk, a bad copy) are passed
    over, each with one line to ``log`` saying so; None when there is no checkpoint at all, and a
    ValueError naming every damaged file when none is whole."""
    found = list_checkpoints(out_dir)
    problems = []
    for path in reversed(found):
        try:
            verify_checkpoint(path)
        except (ValueError, OSError) as exc:
            problems.append(str(exc))
            continue
        if problems and log is not None:
            log(f"warning: the newest checkpoint is damaged ({'; '.join(problems)}); resuming from {path} instead")
        return path
    if problems:
        raise UsageError(f"--resume: no checkpoint in {Path(out_dir) / runs.CHECKPOINTS_DIR} is whole: {'; '.join(problems)}")
    return None


def load_checkpoint(path: Path, model, optimizer, scheduler) -> dict:
    """Restore model, optimizer, scheduler and RNG from ``path``; returns the trainer state."""
    path = Path(path)
    state = verify_checkpoint(path)
    load_weights(model, path)
    optimizer.load_state_dict(torch.load(path / runs.OPTIMIZER_FILE, weights_only=False))
    scheduler.load_state_dict(torch.load(path / runs.SCHEDULER_FILE, weights_only=False))
    set_rng_state(torch.load(path / runs.RNG_FILE, weights_only=False))
    return state
