"""LoRA adapters vs full fine-tuning of the real pretrained model, side by side in one run: seconds
per optimizer step, peak resident memory, and the step's achieved FLOP/s against this machine's own
matrix-product rate measured in the same run. A bench, not a test.

Both are the same training step (`rmt.training.trainer.Trainer`, the code `rmt train` runs):
`smollm2-135m`, RMT with gated writes and 16 memory tokens, qa1 over 4 segments of 128 tokens,
batch 8, precision `auto` (bf16 autocast where the CPU has AVX512-BF16/AMX, else fp32), answer-only
labels; LoRA differs by `--lora-rank 8` (alpha 32, the default dropout 0, every linear layer of
the decoder blocks), and `lora-ckpt` adds `--gradient-checkpointing` (activations of one layer kept
instead of every layer's: memory for about one more forward pass of time). Each measurement is its own process (peak RSS is a process's own), and rounds alternate the
order (LoRA first, then full first, ...) so that a machine whose load drifts penalises both alike.
Per process: one warm-up step, then `--steps` timed steps (the trainer's own `seconds_per_step`).

FLOPs of a step are counted from the shapes (matrix products only, the useful ones: a recomputed
forward under checkpointing is not counted): per position of a segment pass
(segment + memory positions) a forward costs 2 x the decoder blocks' weights, plus attention's
QK^T and AV products (4 x positions x hidden per layer); the output layer runs only at the answer
positions (negligible). Full fine-tuning's backward costs 2 x forward (gradients of inputs and of
weights); with LoRA the base's weights need no gradient, so backward is 1 x forward (inputs only;
the rank-8 products are ignored). The matmul rate: a (4096 x 576) @ (576 x 1536) product (the
shape of SmolLM2's MLP over a batch of positions) in the precision the step uses, best of 20.

    python bench/adapters.py                 # 3 rounds, ~15 min on 2 cores
    python bench/adapters.py --rounds 1 --steps 1

Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = ("lora", "full", "lora-ckpt")


def matmul_rate(dtype_name: str, threads: int) -> float:
    """FLOP/s of a (4096 x 576) @ (576 x 1536) product in ``dtype_name``, best of 20."""
    import torch

    torch.set_num_threads(threads)
    dtype = {"bf16": torch.bfloat16, "no": torch.float32}[dtype_name]
    a, b = torch.randn(4096, 576, dtype=dtype), torch.randn(576, 1536, dtype=dtype)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(20):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * 4096 * 576 * 1536 / best


def step_flops(model, batch: int, segments: int, positions: int, lora: bool) -> float:
    """Matrix-product FLOPs of one training step (see the module docstring)."""
    base = model.base_model
    config = base.config
    layers = base.model.layers
    block_weights = sum(p.numel() for name, p in layers.named_parameters() if p.dim() == 2 and "lora_" not in name)
    per_position = 2 * block_weights + 4 * positions * config.hidden_size * config.num_hidden_layers
    forward = batch * segments * positions * per_position
    return forward * (2 if lora else 3)


def worker(args) -> None:
    """One process: build the trainer, one warm-up step, ``args.steps`` timed steps; print JSON."""
    import torch

    from rmt.training.config import TrainConfig
    from rmt.training.trainer import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig.from_dict(dict(model=args.model, task="qa1", segment_size=args.segment, num_mem_tokens=args.mem,
                          memory_write="gated", curriculum=[args.segments], stage_steps=args.steps + 1,
                          vary_n_segments=False, batch_size=args.batch, lr=3e-4, threads=args.threads,
                          mixed_precision="auto", eval_every=10_000, save_every=10_000, log_every=1, progress=False,
                          lora_rank=0 if args.worker == "full" else 8, gradient_checkpointing=args.worker == "lora-ckpt",
                          output_dir=str(Path(tmp) / "run")))
        trainer = Trainer(cfg)
        trainer.train(stop_after=args.steps + 1)
        rows = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
        seconds = [r["seconds_per_step"] for r in rows if r["type"] == "train"][1:]  # the warm-up step dropped
        model = trainer.accelerator.unwrap_model(trainer.model)
        positions = args.segment + model.memory_kind.extra_positions(model.adapter, model.config)
        flops = step_flops(model, args.batch, args.segments, positions, args.worker != "full")
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        precision = cfg.mixed_precision
    print(json.dumps({"variant": args.worker, "seconds_per_step": seconds, "flops_per_step": flops,
                      "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                      "trainable_parameters": trainable, "precision": precision,
                      "matmul_flops": matmul_rate(precision, args.threads), "torch_threads": torch.get_num_threads()}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--segment", type=int, default=128)
    ap.add_argument("--segments", type=int, default=4)
    ap.add_argument("--mem", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2, help="timed steps per process (after one warm-up step)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?")
    flags = Path("/proc/cpuinfo").read_text()
    native = "avx512_bf16" in flags or "amx_bf16" in flags
    results = {v: [] for v in VARIANTS}
    for r in range(args.rounds):
        for variant in (VARIANTS if r % 2 == 0 else VARIANTS[::-1]):  # the order alternates
            cmd = [sys.executable, __file__, "--worker", variant] + [
                f"--{k}={getattr(args, k)}" for k in ("model", "segment", "segments", "mem", "batch", "threads", "steps")]
            env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                raise SystemExit(f"{variant} failed:\n{proc.stderr[-3000:]}")
            results[variant].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1} {variant}: {results[variant][-1]['seconds_per_step']} s/step", file=sys.stderr)

    summary = {}
    for variant, runs in results.items():
        seconds = statistics.median(s for run in runs for s in run["seconds_per_step"])
        flops = runs[0]["flops_per_step"]
        rate = statistics.median(run["matmul_flops"] for run in runs)
        summary[variant] = {"seconds_per_step": round(seconds, 3), "peak_rss_gb": round(max(r["peak_rss_gb"] for r in runs), 2),
                            "achieved_gflops": round(flops / seconds / 1e9, 1), "matmul_gflops": round(rate / 1e9, 1),
                            "fraction_of_matmul_rate": round(flops / seconds / rate, 3),
                            "trainable_parameters": runs[0]["trainable_parameters"], "precision": runs[0]["precision"]}
    ratios = {v: {"time": round(summary[v]["seconds_per_step"] / summary["full"]["seconds_per_step"], 3),
                  "rss": round(summary[v]["peak_rss_gb"] / summary["full"]["peak_rss_gb"], 3)} for v in ("lora", "lora-ckpt")}
    print(f"\nCPU: {cpu} ({'native bf16' if native else 'no native bf16'}), {args.threads} threads; "
          f"{args.segments} x ({args.segment} + memory) positions, batch {args.batch}, {args.rounds} rounds x {args.steps} steps")
    print(f"{'':9} {'s/step':>8} {'peak RSS GB':>12} {'GFLOP/s':>9} {'matmul GFLOP/s':>15} {'fraction':>9} {'trainable':>12}")
    for variant, row in summary.items():
        print(f"{variant:9} {row['seconds_per_step']:8.2f} {row['peak_rss_gb']:12.2f} {row['achieved_gflops']:9.1f} "
              f"{row['matmul_gflops']:15.1f} {row['fraction_of_matmul_rate']:9.3f} {row['trainable_parameters']:12,}")
    for v, ratio in ratios.items():
        print(f"{v} / full: time {ratio['time']:.2f}x (target <= 0.7), peak memory {ratio['rss']:.2f}x (target <= 0.5)")
    print(json.dumps({"bench": "adapters", "cpu": cpu, "native_bf16": native, "threads": args.threads,
                      "ratios_to_full": ratios, **summary}))


if __name__ == "__main__":
    main()
