"""Run directories and model directories: the one module that knows their files, and what to load
for a ``--model`` / checkpoint argument (a run, its ``final/``, a checkpoint, a model name).

What ``rmt train --output-dir RUN`` writes (rmt.training.trainer, rmt.training.checkpoint)::

    RUN/train_config.json            TRAIN_CONFIG_FILE  the run's settings (rmt train --config ...)
    RUN/metrics.jsonl                METRICS_FILE       one JSON object per logged step / evaluation
    RUN/tensorboard/                 TENSORBOARD_DIR    with --tensorboard
    RUN/checkpoints/step-000200/     CHECKPOINTS_DIR, step_dir(): a model dir + OPTIMIZER_FILE,
                                     SCHEDULER_FILE, RNG_FILE, TRAINER_STATE_FILE, TRAIN_CONFIG_FILE
    RUN/final/                       FINAL_DIR          the trained model dir (what evaluation loads)
    RUN/diagnose/                    DIAGNOSE_DIR       `rmt diagnose` of final/ (rmt.training.diagnose)
    RUN/diagnose-step-000200/        DIAGNOSE_STEP_DIR  `rmt diagnose` of a checkpoint (beside checkpoints/,
                                                        which training rotates away)

A model dir (written by ``RecurrentMemoryTransformer.save_pretrained`` + the tokenizer's, or an
HF model's ``save_pretrained``)::

    config.json                      BASE_CONFIG_FILE   the base model's HF config
    rmt_config.json                  RMT_CONFIG_FILE    RMT only: memory settings, base class
    model.safetensors                WEIGHTS_FILE       every weight; or, for LoRA on a frozen base:
    adapter_model.safetensors        ADAPTER_WEIGHTS_FILE  the adapters and the memory's parameters only
                                     (rmt_config.json names the base and its weights fingerprint)
    tokenizer.json, ...              the tokenizer's own files

``locate(spec)`` says what a spec is; model *names* (registered, ``.gguf``, hub) are resolved by
``rmt.models.resolve``, which this module calls. Tokenizers load with one pad rule
(``rmt.models.load_tokenizer``). Standard library at import time: the memory side takes its file
names from here, and ``rmt --help`` stays fast.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from rmt import models
from rmt.models import HF_CONFIG_FILE, load_causal_lm, load_tokenizer, set_pad  # noqa: F401  (the run's tokenizer/base model)

# A model dir.
BASE_CONFIG_FILE = HF_CONFIG_FILE  # the base model's HF config: an HF model dir's own file (rmt.models)
RMT_CONFIG_FILE = "rmt_config.json"
WEIGHTS_FILE = "model.safetensors"
# A model with LoRA adapters on a frozen base holds only what was trained (the adapters and the
# memory's parameters) here instead of WEIGHTS_FILE; rmt_config.json names its base (rmt.memory.lora).
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
# A run dir.
TRAIN_CONFIG_FILE = "train_config.json"
METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
FINAL_DIR = "final"
CHECKPOINTS_DIR = "checkpoints"
DIAGNOSE_DIR = "diagnose"
DIAGNOSE_STEP_DIR = "diagnose-{step_dir}"  # .format(step_dir=the checkpoint's dir name)
# A checkpoint dir (a model dir plus what exact resume needs).
TRAINER_STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"
RNG_FILE = "rng.pt"
RESUME_FILES = (OPTIMIZER_FILE, SCHEDULER_FILE, RNG_FILE)
STEP_DIR = re.compile(r"^step-(\d+)$")


def step_dir(run_dir: str | os.PathLike, step: int) -> Path:
    """``RUN/checkpoints/step-000200``: the checkpoint of ``step``."""
    return Path(run_dir) / CHECKPOINTS_DIR / f"step-{step:06d}"


def is_rmt_checkpoint(path: str | os.PathLike) -> bool:
    """A model dir with memory (``rmt_config.json``)."""
    return (Path(path) / RMT_CONFIG_FILE).is_file()


def rmt_checkpoint_of(spec) -> Path | None:
    """``spec`` as an RMT model dir: the dir itself, or a run dir's ``final/``; None for anything else."""
    if not spec:
        return None
    path = Path(str(spec)).expanduser()
    return next((p for p in (path, path / FINAL_DIR) if is_rmt_checkpoint(p)), None)


def model_dir_of(path: str | os.PathLike) -> Path | None:
    """The model dir that ``path`` stands for: an RMT model dir, a run's ``final/`` RMT model, an HF
    model dir (``config.json``), a run's ``final/`` model without memory; None when none is there."""
    path = Path(path).expanduser()
    found = rmt_checkpoint_of(path)
    if found is not None:
        return found
    return next((p for p in (path, path / FINAL_DIR) if (p / BASE_CONFIG_FILE).is_file()), None)


def train_config_of(model_dir: str | os.PathLike) -> Path | None:
    """The ``train_config.json`` of a model dir that ``rmt train`` wrote: in it (a checkpoint holds
    the run's config itself) or one level up (``RUN/final/``); None for other models."""
    model_dir = Path(model_dir).expanduser()
    return next((p / TRAIN_CONFIG_FILE for p in (model_dir, model_dir.parent) if (p / TRAIN_CONFIG_FILE).is_file()),
                None)


@dataclass(frozen=True)
class Located:
    """What a model spec stands for. ``where``: what ``from_pretrained`` reads (a local model dir,
    a cached conversion of a registered name or ``.gguf`` file, or a hub name); ``rmt``: a model
    with memory (load it with ``RecurrentMemoryTransformer.from_pretrained``); ``train_config``:
    the run's settings when ``rmt train`` wrote it."""

    spec: str
    where: str
    rmt: bool = False
    train_config: Path | None = None

    @property
    def model_dir(self) -> Path:
        return Path(self.where)


def locate(spec: str | os.PathLike) -> Located:
    """``spec`` -> what to load. A local directory is a model dir, or a run whose ``final/`` is one
    (``RUN`` and ``RUN/final`` load the same model); anything else is a model name, resolved by
    ``rmt.models.resolve`` (registered names and ``.gguf`` files are converted on first use; an
    unknown name is one ``UsageError`` line). A directory that holds no model is passed on as it
    is: loading it says what is missing."""
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_dir():
        model_dir = model_dir_of(path) or path
        where = text if model_dir == Path(text) else str(model_dir)  # as typed where it names the model dir
        return Located(text, where, is_rmt_checkpoint(model_dir), train_config_of(model_dir))
    return Located(text, models.resolve(text))


def trained_by_rmt_train(spec: str | os.PathLike) -> bool:
    """Whether ``spec`` is a run of ``rmt train`` or a model dir in one (no name is looked up)."""
    path = Path(str(spec)).expanduser()
    if not path.is_dir():
        return False
    return train_config_of(model_dir_of(path) or path) is not None
