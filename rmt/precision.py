"""The precision ``auto`` picks for inference (``rmt demo``, ``rmt eval``): bf16 weights where bf16
is native and the model is large enough for it to pay, else the weights as saved.

Where bf16 matrix products are native (a CPU with AVX512-BF16 or AMX-BF16, a CUDA GPU that supports
bf16: ``rmt.training.trainer.native_bf16``, the rule ``rmt train --mixed-precision auto`` reads),
a float32 model of at least :data:`AUTO_BF16_MIN_PARAMETERS` parameters is cast to bf16 weights:
SmolLM2-135M wrapped with memory streamed 2.1x faster so (1,210 vs 565 tokens/s, issue 27). Smaller
models stay as saved: their time is overhead, not matrix products (and the test suite's tiny models
keep their float32 answers on every machine). Without native bf16, bf16 products are many times
slower than fp32 (bench/matmul_precision.py), so nothing is cast. An explicit ``--dtype`` always
wins. Whole-model bf16 weights, not autocast: autocast keeps norms and softmax in fp32 and casts
activations around every product, which costs more than it saves at inference.
"""

from __future__ import annotations

from rmt.errors import UsageError

AUTO = "auto"
AUTO_BF16_MIN_PARAMETERS = 20_000_000
DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")


def check_dtype(dtype: str | None, flag: str = "--dtype") -> str:
    """``dtype`` (None: ``auto``) if it is one of :data:`DTYPE_CHOICES`; one-line UsageError otherwise."""
    dtype = AUTO if dtype is None else dtype
    if dtype not in DTYPE_CHOICES:
        raise UsageError(f"unknown {flag} {dtype!r}; allowed: {', '.join(DTYPE_CHOICES)}")
    return dtype


def choose_dtype(saved: str, parameters: int, native: bool) -> tuple[str | None, str]:
    """What ``auto`` does with a model loaded in ``saved`` (a dtype name) of ``parameters``
    parameters, bf16 being ``native`` here or not: (the dtype to cast to, or None to keep it; why)."""
    if saved != "float32":
        return None, f"auto: kept as saved ({saved})"
    if not native:
        return None, "auto: float32, no native bf16 here"
    if parameters < AUTO_BF16_MIN_PARAMETERS:
        return None, f"auto: float32, a small model ({parameters / 1e6:.1f}M parameters: bf16 does not pay)"
    return "bfloat16", f"auto: bf16 weights (native bf16 here, {parameters / 1e6:.0f}M parameters)"


def apply_dtype(module, dtype: str | None, device: str | None = None) -> str:
    """Cast the torch ``module`` as ``dtype`` says (``auto``/None: :func:`choose_dtype`; a dtype
    name: that one) in place; returns one line saying what it runs in and why."""
    import torch

    dtype = check_dtype(dtype)
    first = next(module.parameters(), None)
    if first is None:
        return "no parameters"
    saved = str(first.dtype).replace("torch.", "")
    if dtype != AUTO:
        if dtype != saved:
            module.to(getattr(torch, dtype))
        return f"{dtype} weights (asked)"
    from rmt.training.trainer import native_bf16

    cuda = str(device or first.device).startswith("cuda")
    target, why = choose_dtype(saved, sum(p.numel() for p in module.parameters()), native_bf16(cuda))
    if target is not None:
        module.to(getattr(torch, target))
    return why
