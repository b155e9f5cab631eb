"""The optimizer's parameter groups, the learning-rate schedule and the mixed precision of a run."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from accelerate.state import AcceleratorState

from rmt.memory import RecurrentMemoryTransformer
from rmt.training.config import TrainConfig


def param_groups(model, weight_decay: float, memory_lr: float | None = None) -> list[dict]:
    """Weight decay on matrices only (as nanoGPT / HF do): decaying norm gains would shrink the
    final norm that produces each new memory state. A memory kind names its matrices that are not
    weights (``MemoryKind.no_weight_decay``: the memory tokens, which are state; ARMT's ``b_gate``,
    2-D only because it stacks one bias per layer); they are not decayed either.

    ``memory_lr``: the parameters the memory adds (``memory_kind.*``: memory tokens, write gate,
    ARMT's projections) get their own learning rate, in two more groups; the base model keeps the
    optimizer's. New parameters beside a pretrained model start from scratch, where the base model
    only needs a nudge (the way adapters are trained at a higher rate). None: one rate for all,
    and the two groups of before (so earlier checkpoints' optimizer states still load)."""
    kept = set()
    if isinstance(model, RecurrentMemoryTransformer):
        kept = {"memory_kind." + name for name in model.memory_kind.no_weight_decay}
    groups = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decays = p.dim() >= 2 and name not in kept
        own = memory_lr is not None and name.startswith("memory_kind.")
        groups.setdefault((own, decays), []).append(p)
    out = []
    for own in (False, True) if memory_lr is not None else (False,):
        for decays in (True, False):
            group = {"params": groups.get((own, decays), []), "weight_decay": weight_decay if decays else 0.0}
            if own:
                group["lr"] = memory_lr
            out.append(group)
    return out


def make_scheduler(optimizer, cfg: TrainConfig):
    total, warmup = cfg.total_steps, cfg.warmup_steps

    def factor(step):
        if warmup and step < warmup:
            return (step + 1) / warmup
        if cfg.scheduler == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 1.0 - progress if cfg.scheduler == "linear" else 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _forget_other_precision(mixed_precision: str) -> None:
    """accelerate keeps one process-wide state, and refuses an ``Accelerator`` with another mixed
    precision than the first one of the process had. In one process (no launcher) that state is
    only an earlier run's, e.g. an fp32 run before a bf16 one in the same Python session: drop it
    so this run gets the precision it asks for. (Under a launcher every process runs one training.)"""
    shared = AcceleratorState._shared_state
    earlier = shared.get("_mixed_precision")
    if earlier is not None and earlier != mixed_precision and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        AcceleratorState._reset_state()


def native_bf16(cuda: bool) -> bool:
    """Whether bf16 matrix products are native here: a CUDA device that supports bf16, or a CPU
    with AVX512-BF16 or AMX-BF16 (read from Linux's /proc/cpuinfo; elsewhere: no)."""
    if cuda:
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_mixed_precision(cfg: TrainConfig, cuda: bool) -> tuple[str, str]:
    """``cfg.mixed_precision`` with ``auto`` decided, and why. ``auto`` is bf16 autocast for a
    pretrained ``--model`` where bf16 is native: on SmolLM2-135M on a CPU with AVX512-BF16 a step
    took 0.44x the fp32 step with loss curves within fp32's own noise (bench/train_precision.py);
    on an AVX2-only CPU of the same machine kind, bf16 products ran at 0.03x fp32
    (bench/matmul_precision.py), so there it is fp32. Models trained from scratch stay fp32: they are small (a step is
    overhead, not matrix products) and the reproduce recipes' numbers were measured in fp32."""
    if cfg.mixed_precision != "auto":
        return cfg.mixed_precision, "asked"
    if cfg.model is None:
        return "no", "auto: a model trained from scratch stays fp32"
    if not native_bf16(cuda):
        return "no", f"auto: no native bf16 on this {'GPU' if cuda else 'CPU'}"
    return "bf16", f"auto: a pretrained model on a {'GPU' if cuda else 'CPU'} with native bf16"
