"""`rmt train` on the real pretrained model in fp32 and under bf16 autocast, side by side in one run
(issue 17, item 6). A bench, not a test.

Both runs are the same `rmt train` command (the user's path: `--model smollm2-135m`, RMT, gated
writes, qa1 with background, a fixed seed so both see the same batches in the same order), differing
only in `--mixed-precision no` / `bf16`. Rounds alternate the order (fp32 first, then bf16 first, ...)
so that a machine whose load drifts penalises both alike. Reported per precision: the median of the
trainer's own `seconds_per_step` records (its logged wall time of the optimizer step, model loading
and evaluation excluded), tokens per second (batch x segments x (segment + 2 x memory tokens) per
step, i.e. every position the model runs), and the loss curve; compared: the mean absolute
difference of the two loss curves against the step-to-step noise of the fp32 curve itself (the mean
absolute difference of consecutive fp32 losses), and the final validation accuracy of each.

    python bench/train_precision.py --out results/bench-train-precision      # ~15 min, 1 thread
    python bench/train_precision.py --quick                                   # 3 steps each, 1 round

Prints a table and one JSON line (also `results.json` in `--out`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rmt.outputs import bench_out_or_exit, start_bench_output

PRECISIONS = ("no", "bf16")


def run_train(precision: str, out: Path, args) -> dict:
    cmd = [sys.executable, "-m", "rmt", "train", "--model", args.model, "--task", "qa1",
           "--background", args.background, "--segment-size", str(args.segment),
           "--num-mem-tokens", str(args.mem), "--memory-write", "gated", "--curriculum", str(args.segments),
           "--stage-steps", str(args.steps), "--batch-size", str(args.batch), "--lr", "1e-4",
           "--warmup-steps", "2", "--seed", "0", "--threads", str(args.threads),
           "--mixed-precision", precision, "--eval-every", str(args.steps), "--eval-samples", str(args.eval_samples),
           "--log-every", "1", "--no-progress", "--output-dir", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    started = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"rmt train --mixed-precision {precision} failed:\n{proc.stderr[-2000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    train = [r for r in rows if r.get("type") == "train"]
    evals = [r for r in rows if r.get("type") == "eval"]
    return {"wall_s": round(time.time() - started, 1),
            "seconds_per_step": [r["seconds_per_step"] for r in train],
            "loss": [r["loss"] for r in train],
            "eval_accuracy": evals[-1].get("accuracy") if evals else None}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--background", default=str(Path(__file__).resolve().parents[1].parent / "shared/data/background"))
    ap.add_argument("--segment", type=int, default=64)
    ap.add_argument("--mem", type=int, default=8)
    ap.add_argument("--segments", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--eval-samples", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="directory for results.json (new, empty or written by "
                    "this bench before; never a directory of yours)")
    ap.add_argument("--overwrite", action="store_true", help="write into an --out this bench did not write")
    args = ap.parse_args()
    out = bench_out_or_exit(ap, args.out, "train_precision", args.overwrite)  # before any work
    if args.quick:
        args.steps, args.rounds, args.eval_samples = 3, 1, 8
    if not Path(args.background).is_dir():
        args.background = "builtin"
    runs = {p: [] for p in PRECISIONS}
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(args.rounds):
            order = PRECISIONS if rnd % 2 == 0 else PRECISIONS[::-1]
            for precision in order:
                print(f"round {rnd + 1}/{args.rounds}: --mixed-precision {precision} ...", flush=True)
                runs[precision].append(run_train(precision, Path(tmp) / f"{precision}-{rnd}", args))
    tokens_per_step = args.batch * args.segments * (args.segment + 2 * args.mem)
    summary = {"model": args.model, "segments": args.segments, "segment": args.segment, "mem": args.mem,
               "batch": args.batch, "steps": args.steps, "rounds": args.rounds, "threads": args.threads,
               "load_average": os.getloadavg()[0]}
    for precision, rs in runs.items():
        # the first step of a run pays one-time costs (allocator, autocast caches): left out
        per_step = [s for r in rs for s in r["seconds_per_step"][1:]] or [s for r in rs for s in r["seconds_per_step"]]
        median = statistics.median(per_step)
        summary[precision] = {"median_seconds_per_step": round(median, 3),
                              "tokens_per_second": round(tokens_per_step / median, 1),
                              "eval_accuracy": [r["eval_accuracy"] for r in rs],
                              "wall_s": [r["wall_s"] for r in rs], "loss": rs[0]["loss"]}
    fp32, bf16 = runs["no"][0]["loss"], runs["bf16"][0]["loss"]
    summary["speedup_bf16"] = round(summary["no"]["median_seconds_per_step"] / summary["bf16"]["median_seconds_per_step"], 2)
    summary["loss_mean_abs_diff"] = round(statistics.fmean(abs(a - b) for a, b in zip(fp32, bf16)), 4)
    summary["fp32_step_to_step_noise"] = round(statistics.fmean(abs(a - b) for a, b in zip(fp32, fp32[1:])), 4) if len(fp32) > 1 else None
    # the same run repeated (round 2) shows whether fp32 itself is deterministic here
    if len(runs["no"]) > 1:
        summary["fp32_repeat_loss_diff"] = round(statistics.fmean(abs(a - b) for a, b in zip(fp32, runs["no"][1]["loss"])), 6)
        summary["bf16_repeat_loss_diff"] = round(statistics.fmean(abs(a - b) for a, b in zip(bf16, runs["bf16"][1]["loss"])), 6)
    print(f"\n{args.model}, RMT gated, {args.segments} x ({args.segment} + 2x{args.mem}) positions, batch {args.batch}, "
          f"{args.steps} steps x {args.rounds} rounds, {args.threads} thread(s), load {summary['load_average']:.1f}")
    print("| precision | s/step (median) | tokens/s | final eval accuracy |\n|---|---:|---:|---|")
    for precision in PRECISIONS:
        s = summary[precision]
        print(f"| {'fp32' if precision == 'no' else 'bf16 autocast'} | {s['median_seconds_per_step']} | "
              f"{s['tokens_per_second']} | {s['eval_accuracy']} |")
    print(f"bf16 / fp32 speed: {summary['speedup_bf16']}x; loss curves: mean |fp32 - bf16| "
          f"{summary['loss_mean_abs_diff']} vs fp32 step-to-step {summary['fp32_step_to_step_noise']}")
    print(json.dumps(summary))
    if out:
        start_bench_output(out, "train_precision")
        (out / "results.json").write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
