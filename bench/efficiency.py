"""Efficiency against the physical limit (issue 12): this CPU's matmul FLOP/s vs the FLOP/s our RMT
achieves streaming and training, at segments of 128 and 512, side by side in one run.

* Matmul FLOP/s: a 1024^3 torch matmul in the model's dtype at the same thread count (the roofline),
  and for reference the model's own products: (T x 256) @ (256 x 1024) and (T x 1024) @ (1024 x 256),
  T = segment + 32 memory positions.
* The model (bench/workloads.py): GPT-2 4 x 256, vocabulary 5000, 16 memory tokens.
* Streaming: 32k tokens (batch 1) through ``model.stream``; training: one step (forward, backward,
  AdamW) on 2 rows of 16 x 128 or 4 x 512 tokens with labels on every token (the output layer on
  every position: the most arithmetic per token, ``model(ids, labels=ids)``).
* FLOPs (workloads.segment_flops): 24 H^2 per layer and position (GPT-2's four products), causal
  attention 2 T^2 H per layer, the output layer 2 H V per position with logits; training is 3x the
  forward. ``executed`` counts what our code runs (a stream's last layer keeps the memory rows only,
  no output layer); ``nominal`` every layer on every position of [memory; segment; memory] (the
  conventional model-FLOPs count; a stream still without the output layer).

Rounds are interleaved (matmul, then every workload, per round and thread count); medians are
kept. Target: executed FLOP/s at 512-token segments >= 50% of the matmul figure.

    python bench/efficiency.py                  # ~4 min on 2 shared cores
    python bench/efficiency.py --threads 1 --rounds 1

Prints a table per thread count and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workloads as W  # noqa: E402

STREAM_TOKENS = 32768


def model_shape_rate(threads: int, rows: int) -> float:
    """The FLOP/s of the model's own MLP products at ``rows`` positions (the larger two of a layer)."""
    torch.set_num_threads(threads)
    x, w_in = torch.randn(rows, W.HIDDEN), torch.randn(W.HIDDEN, 4 * W.HIDDEN)
    h, w_out = torch.randn(rows, 4 * W.HIDDEN), torch.randn(4 * W.HIDDEN, W.HIDDEN)
    flops = 2 * 2 * rows * W.HIDDEN * 4 * W.HIDDEN

    def both():
        x @ w_in
        h @ w_out

    both()
    best = min(W.timed(lambda: [both() for _ in range(20)])[0] for _ in range(3)) / 20
    return flops / best


def workloads():
    """{name: (function, executed FLOPs, nominal FLOPs, tokens)}."""
    jobs = {}
    for segment in (128, 512):
        base = W.build_base(segment).eval()
        model = W.build_ours(base, segment).eval()
        ids = torch.randint(0, W.VOCAB, (1, STREAM_TOKENS), generator=torch.Generator().manual_seed(segment))
        n = STREAM_TOKENS // segment
        executed = n * W.segment_flops(segment, 0, W.MEM, W.MEM)
        nominal = n * W.segment_flops(segment, 0)
        jobs[f"stream-{segment}"] = (lambda model=model, ids=ids: W.ours_stream(model, ids), executed, nominal, STREAM_TOKENS)
    for name, (segment, n_segments) in W.TRAIN.items():
        base = W.build_base(segment)
        model = W.build_ours(base, segment).train()
        ids, labels = W.batch(segment, n_segments, "lm")
        opt = W.frozen_adamw(model)
        flops = W.train_flops(segment, n_segments, "lm", executed=True)
        step = lambda model=model, ids=ids, labels=labels, opt=opt: W.train_step(opt, lambda: model(ids, labels=labels).loss)
        jobs[name] = (step, flops, flops, ids.numel())
    return jobs


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", default="1,2", help="comma-separated torch thread counts, interleaved")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",") if t]
    load_before = W.load_average()
    print(f"GPT-2 {W.LAYERS} x {W.HIDDEN}, vocabulary {W.VOCAB}, {W.MEM} memory tokens, fp32; threads {threads}; "
          f"{args.rounds} interleaved rounds; load average {load_before}")
    jobs = workloads()
    for t in threads:  # warm-up
        torch.set_num_threads(t)
        for fn, *_ in jobs.values():
            fn()

    from tqdm import tqdm

    rates = {t: {"matmul": [], "shape-160": [], "shape-544": []} for t in threads}
    times = {}
    with tqdm(total=args.rounds * len(threads) * len(jobs), desc="bench", unit="run") as bar:
        for _ in range(args.rounds):
            for t in threads:
                rates[t]["matmul"].append(W.matmul_flops_per_second(t))
                rates[t]["shape-160"].append(model_shape_rate(t, 128 + 2 * W.MEM))
                rates[t]["shape-544"].append(model_shape_rate(t, 512 + 2 * W.MEM))
                torch.set_num_threads(t)
                for name, (fn, *_rest) in jobs.items():
                    times.setdefault((t, name), []).append(W.timed(fn)[0])
                    bar.update(1)
    load_after = W.load_average()

    summary = {"load_average_before": load_before, "load_average_after": load_after, "rounds": args.rounds}
    for t in threads:
        peak = W.median(rates[t]["matmul"])
        print(f"\n{t} thread(s): matmul {peak / 1e9:.1f} GFLOP/s (1024^3 fp32); the model's MLP products "
              f"{W.median(rates[t]['shape-160']) / 1e9:.1f} GFLOP/s at 160 rows, {W.median(rates[t]['shape-544']) / 1e9:.1f} at 544")
        print(f"{'workload':<16}{'tokens/s':>10}{'executed GFLOP/s':>18}{'of matmul':>11}{'nominal GFLOP/s':>17}{'of matmul':>11}")
        row = {"matmul_gflops": round(peak / 1e9, 1), "mlp_products_gflops_160": round(W.median(rates[t]["shape-160"]) / 1e9, 1),
               "mlp_products_gflops_544": round(W.median(rates[t]["shape-544"]) / 1e9, 1)}
        for name, (_, executed, nominal, tokens) in jobs.items():
            seconds = W.median(times[(t, name)])
            ex, no = executed / seconds, nominal / seconds
            print(f"{name:<16}{tokens / seconds:>10.0f}{ex / 1e9:>18.1f}{ex / peak:>11.0%}{no / 1e9:>17.1f}{no / peak:>11.0%}")
            row[name] = {"tokens_per_s": round(tokens / seconds, 1), "executed_gflops": round(ex / 1e9, 2),
                         "executed_fraction_of_matmul": round(ex / peak, 3), "nominal_gflops": round(no / 1e9, 2),
                         "nominal_fraction_of_matmul": round(no / peak, 3)}
        summary[f"threads_{t}"] = row
    print(f"target: executed FLOP/s at 512-token segments >= 50% of the matmul figure; load average before {load_before}, "
          f"after {load_after}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
