"""The matrix products of one SmolLM2-135M layer in fp32 and in bf16 on this machine, side by side,
and what `rmt train --mixed-precision auto` chooses here. A bench, not a test.

Why it exists: bf16 autocast made a training step 2.28x faster on a CPU with AVX512-BF16
(bench/train_precision.py), but on a CPU without native bf16 (AVX2 only) PyTorch converts every
bf16 product back to fp32 element by element, and the same product is many times slower. `auto`
reads /proc/cpuinfo (`rmt.training.trainer.native_bf16`); this script shows the reason on the
machine at hand in seconds, without loading the model.

The shapes are one decoder layer's products at a batch of 8 x 256 tokens: q and o (576 x 576),
k and v (576 x 192; 3 KV heads), gate and up (576 x 1536), down (1536 x 576). Rounds alternate
the order of the two precisions so that load drift penalises both alike.

    python bench/matmul_precision.py                     # 1 thread, 3 rounds: ~20 s; ~2 min without native bf16
    python bench/matmul_precision.py --threads 2 --tokens 4096
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from rmt.threads import set_threads
from rmt.training.trainer import native_bf16

HIDDEN, KV, MLP = 576, 192, 1536
SHAPES = [(HIDDEN, HIDDEN), (HIDDEN, KV), (HIDDEN, KV), (HIDDEN, HIDDEN),
          (HIDDEN, MLP), (HIDDEN, MLP), (MLP, HIDDEN)]


def layer_gflops(tokens: int, dtype: torch.dtype, seconds: float) -> float:
    """Products of one layer, repeated for `seconds`: GFLOP/s."""
    gen = torch.Generator().manual_seed(0)
    pairs = [(torch.randn(tokens, k, generator=gen).to(dtype), torch.randn(k, n, generator=gen).to(dtype))
             for k, n in SHAPES]
    flops = sum(2 * tokens * k * n for k, n in SHAPES)
    for a, b in pairs:  # warm up (oneDNN picks its kernels on first use)
        a @ b
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for a, b in pairs:
            a @ b
        done += 1
    return flops * done / (time.perf_counter() - start) / 1e9


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=8 * 256, help="rows of each product (batch x sequence)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0, help="per precision per round")
    args = ap.parse_args()
    set_threads(args.threads)
    rates = {"fp32": [], "bf16": []}
    for r in range(args.rounds):
        order = ["fp32", "bf16"] if r % 2 == 0 else ["bf16", "fp32"]
        for name in order:
            rates[name].append(layer_gflops(args.tokens, torch.float32 if name == "fp32" else torch.bfloat16, args.seconds))
    fp32, bf16 = statistics.median(rates["fp32"]), statistics.median(rates["bf16"])
    native = native_bf16(cuda=False)
    print(f"{'precision':>9}  GFLOP/s (median of {args.rounds})")
    print(f"{'fp32':>9}  {fp32:8.1f}")
    print(f"{'bf16':>9}  {bf16:8.1f}")
    print(f"bf16 / fp32: {bf16 / fp32:.2f}x; native bf16 here: {native}; "
          f"--mixed-precision auto chooses {'bf16' if native else 'fp32'} for a pretrained model")
    print(json.dumps({"tokens": args.tokens, "threads": args.threads, "fp32_gflops": round(fp32, 1),
                      "bf16_gflops": round(bf16, 1), "bf16_over_fp32": round(bf16 / fp32, 3),
                      "native_bf16": native}))


if __name__ == "__main__":
    main()
