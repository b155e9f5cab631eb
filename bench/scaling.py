"""Scaling of streaming RMT inference vs the same model with full attention.

One small GPT-2-like config. Each (method, length) runs in a fresh subprocess, so its peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) is its own; time is wall-clock of the streaming /
forward call only (model construction and one warm-up segment excluded), under ``torch.no_grad``.

* RMT: ``model.stream`` over seeded random token chunks produced on the fly (the input never exists
  as a whole), at 4k, 8k, 16k, 32k, 64k, 256k and 1M tokens.
* Full attention: the base model's own forward on the whole input at once (SDPA, no KV cache), at
  lengths up to ``--full-max`` (its learned position table is sized to that, default 32k). Beyond
  it the model has no positions, and its cost grows quadratically anyway.

Runs shorter than ``--min-seconds`` are repeated and averaged (one sub-second run on a shared machine
is mostly noise); the CPU time of the measuring process is reported beside wall time, as it is less
sensitive to other load on the machine.

Prints a table and ends with one JSON line: speedup_rmt_over_full_attention (full-attention wall
time / RMT wall time, per length), cpu_speedup_rmt_over_full_attention (the same with CPU time), mem_ratio_1M_over_16k (peak RSS), time_per_token_ratio_1M_over_16k
(wall) and cpu_time_per_token_ratio_1M_over_16k.
Targets (issue 2): mem ratio <= 1.1, time/token ratio <= 1.2, speedup > 1 from 8k on.

    python bench/scaling.py                 # a few minutes on one CPU thread
    python bench/scaling.py --quick         # lengths up to 64k, for a smoke run
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

CONFIG = dict(n_layer=2, n_head=2, n_embd=128, vocab_size=1024)
SEGMENT, MEM_TOKENS, CHUNK = 512, 16, 8192
RMT_LENGTHS = [4096, 8192, 16384, 32768, 65536, 262144, 1048576]


def _peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _build(full_max: int):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from rmt import RMTConfig, RecurrentMemoryTransformer

    torch.manual_seed(0)
    base = GPT2LMHeadModel(GPT2Config(n_positions=max(full_max, SEGMENT + 2 * MEM_TOKENS), **CONFIG)).eval()
    return RecurrentMemoryTransformer.wrap(base, RMTConfig(num_mem_tokens=MEM_TOKENS, segment_size=SEGMENT)).eval()


def child(method: str, length: int, full_max: int, threads: int, min_seconds: float) -> dict:
    import torch

    torch.set_num_threads(threads)
    model = _build(full_max)
    generator = torch.Generator().manual_seed(length)
    vocab = CONFIG["vocab_size"]
    with torch.no_grad():
        model.stream([torch.randint(0, vocab, (1, SEGMENT), generator=generator)])  # warm-up

        def once():
            if method == "rmt":
                def chunks():
                    done = 0
                    while done < length:
                        n = min(CHUNK, length - done)
                        yield torch.randint(0, vocab, (1, n), generator=generator)
                        done += n

                state = model.stream(chunks())
                assert state.n_tokens == length and bool(torch.isfinite(state.memory).all())
            else:
                logits = model.base_model(torch.randint(0, vocab, (1, length), generator=generator), use_cache=False).logits
                assert logits.shape[1] == length

        # Short runs are repeated until `min_seconds` have passed and averaged: on a shared machine
        # one sub-second run is mostly noise. CPU time (this process only) is reported beside wall time.
        runs, wall_start, cpu_start = 0, time.perf_counter(), time.process_time()
        while True:
            once()
            runs += 1
            if time.perf_counter() - wall_start >= min_seconds:
                break
        seconds = (time.perf_counter() - wall_start) / runs
        cpu_seconds = (time.process_time() - cpu_start) / runs
    return {"method": method, "length": length, "runs": runs, "seconds": seconds, "cpu_seconds": cpu_seconds,
            "tokens_per_s": length / seconds, "peak_rss_mib": _peak_rss_mib()}


def run_child(method: str, length: int, full_max: int, threads: int, min_seconds: float) -> dict:
    cmd = [sys.executable, __file__, "--child", method, "--length", str(length), "--full-max", str(full_max),
           "--threads", str(threads), "--min-seconds", str(min_seconds)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{method} at {length} tokens failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _label(n: int) -> str:
    return f"{n // 1048576}M" if n % 1048576 == 0 else f"{n // 1024}k"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", choices=["rmt", "full"])
    parser.add_argument("--length", type=int)
    parser.add_argument("--full-max", type=int, default=32768, help="longest full-attention run (its position table size)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per run (1 by default: on a shared 2-core machine, 2 threads oversubscribe and time becomes noise)")
    parser.add_argument("--min-seconds", type=float, default=4.0, help="repeat a run until this much wall time has passed")
    parser.add_argument("--quick", action="store_true", help="RMT up to 64k only (no 1M ratios)")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.length, args.full_max, args.threads, args.min_seconds)))
        return

    from tqdm import tqdm

    lengths = [n for n in RMT_LENGTHS if not args.quick or n <= 65536]
    full_lengths = [n for n in RMT_LENGTHS if n <= args.full_max]
    jobs = [("rmt", n) for n in lengths] + [("full", n) for n in full_lengths]
    rows = {}
    started = time.perf_counter()
    for method, n in tqdm(jobs, desc="bench", unit="run"):
        rows[(method, n)] = run_child(method, n, args.full_max, args.threads, args.min_seconds)

    print(f"\nGPT-2-like {CONFIG}, RMT segment_size={SEGMENT}, num_mem_tokens={MEM_TOKENS}, "
          f"threads={args.threads}, full attention up to {_label(args.full_max)} positions")
    print(f"{'method':<8}{'tokens':>8}{'runs':>6}{'s/run':>9}{'tokens/s':>11}{'us/token':>10}{'cpu us/token':>14}{'peak RSS MiB':>14}")
    for (method, n), r in rows.items():
        print(f"{method:<8}{_label(n):>8}{r['runs']:>6}{r['seconds']:>9.2f}{r['tokens_per_s']:>11.0f}{1e6 / r['tokens_per_s']:>10.1f}"
              f"{1e6 * r['cpu_seconds'] / n:>14.1f}{r['peak_rss_mib']:>14.0f}")
    print(f"total bench wall time {time.perf_counter() - started:.0f} s")

    summary = {
        "speedup_rmt_over_full_attention": {
            _label(n): round(rows[("full", n)]["seconds"] / rows[("rmt", n)]["seconds"], 3) for n in full_lengths if ("rmt", n) in rows
        },
        "cpu_speedup_rmt_over_full_attention": {
            _label(n): round(rows[("full", n)]["cpu_seconds"] / rows[("rmt", n)]["cpu_seconds"], 3) for n in full_lengths if ("rmt", n) in rows
        },
    }
    top = max(lengths)
    if ("rmt", 16384) in rows:
        base = rows[("rmt", 16384)]
        summary[f"mem_ratio_{_label(top)}_over_16k"] = round(rows[("rmt", top)]["peak_rss_mib"] / base["peak_rss_mib"], 3)
        summary[f"time_per_token_ratio_{_label(top)}_over_16k"] = round(base["tokens_per_s"] / rows[("rmt", top)]["tokens_per_s"], 3)
        summary[f"cpu_time_per_token_ratio_{_label(top)}_over_16k"] = round(
            (rows[("rmt", top)]["cpu_seconds"] / top) / (base["cpu_seconds"] / 16384), 3)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
