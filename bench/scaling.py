"""Scaling of streaming inference for the three memories (RMT, RMT-R, ARMT sequential and ARMT with
diagonal batching) vs the same base model with full attention.

One small GPT-2-like config for every method. Each (method, length) runs in a fresh subprocess,
so its peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) is its own; time is wall-clock of
the streaming / forward call only (model construction and one warm-up segment excluded), under
``torch.no_grad``. Runs are interleaved: at every length all methods run one after the other, so
the load of a shared machine hits them alike.

* rmt, rmt-r, armt, armt-diag: ``model.stream`` over seeded random token chunks produced on the fly
  (the input never exists as a whole), at 4k, 8k, 16k, 32k, 64k, 256k and 1M tokens. ``armt`` is
  the sequential loop (``diagonal=False``), ``armt-diag`` diagonal batching (``diagonal=True``).
* full: the base model's own forward on the whole input at once (SDPA, no KV cache), at lengths up
  to ``--full-max`` (its learned position table is sized to that, default 32k).
* rmt at 10M tokens (``10 x 2^20``; leave it out with ``--no-10m``): tokens/s and peak RSS against
  its 1M row (constant memory: the ratio should be ~1).

Runs shorter than ``--min-seconds`` are repeated and averaged. Beside wall time the CPU time of
the measuring process is reported, split into user and system time: system time is mostly page
faults from large temporary tensors (glibc returns freed memory to the OS and takes it back),
which diagonal batching's larger batched tensors trigger more.

Prints a table and ends with one JSON line: speedup over full attention per length (wall, CPU),
peak-memory and time-per-token ratios 1M/16k per memory kind, ARMT's diagonal speed-up over
sequential per length (wall and CPU), and RMT's tokens/s and peak RSS at 1M and 10M.
Targets: mem ratio <= 1.1 (issues 2 and 10), diagonal >= 1.5x sequential ARMT at 64k (issue 10).

    python bench/scaling.py                 # ~20-30 minutes on one CPU thread (10M: ~5 of them)
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
LENGTHS = [4096, 8192, 16384, 32768, 65536, 262144, 1048576]
TEN_MILLION = 10 * 1048576  # RMT only (issue 12): the other memories' rows stop at 1M
MEMORY_METHODS = ["rmt", "rmt-r", "armt", "armt-diag"]
KIND_OF = {"rmt": "rmt", "rmt-r": "rmt-r", "armt": "armt", "armt-diag": "armt"}


def _usage():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF)


def _build(method: str, full_max: int):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging

    from rmt import RMTConfig, RecurrentMemoryTransformer

    logging.set_verbosity_error()
    torch.manual_seed(0)
    base = GPT2LMHeadModel(GPT2Config(n_positions=max(full_max, SEGMENT + 2 * MEM_TOKENS), bos_token_id=0, eos_token_id=0, **CONFIG)).eval()
    kind = KIND_OF.get(method, "rmt")
    return RecurrentMemoryTransformer.wrap(base, RMTConfig(memory_kind=kind, num_mem_tokens=MEM_TOKENS, segment_size=SEGMENT)).eval()


def child(method: str, length: int, full_max: int, threads: int, min_seconds: float) -> dict:
    import torch

    torch.set_num_threads(threads)
    model = _build(method, full_max)
    generator = torch.Generator().manual_seed(length)
    vocab = CONFIG["vocab_size"]
    diagonal = {"armt": False, "armt-diag": True}.get(method)
    with torch.no_grad():
        model.stream([torch.randint(0, vocab, (1, SEGMENT), generator=generator)])  # warm-up

        def once():
            if method != "full":
                def chunks():
                    done = 0
                    while done < length:
                        n = min(CHUNK, length - done)
                        yield torch.randint(0, vocab, (1, n), generator=generator)
                        done += n

                state = model.stream(chunks(), diagonal=diagonal)
                memory = state.memory if isinstance(state.memory, torch.Tensor) else state.memory.A
                assert state.n_tokens == length and bool(torch.isfinite(memory).all())
            else:
                logits = model.base_model(torch.randint(0, vocab, (1, length), generator=generator), use_cache=False).logits
                assert logits.shape[1] == length

        # Short runs are repeated until `min_seconds` have passed and averaged: on a shared machine
        # one sub-second run is mostly noise.
        runs, wall_start, before = 0, time.perf_counter(), _usage()
        while True:
            once()
            runs += 1
            if time.perf_counter() - wall_start >= min_seconds:
                break
        seconds = (time.perf_counter() - wall_start) / runs
        after = _usage()
    user, system = (after.ru_utime - before.ru_utime) / runs, (after.ru_stime - before.ru_stime) / runs
    return {"method": method, "length": length, "runs": runs, "seconds": seconds, "user_seconds": user, "sys_seconds": system,
            "cpu_seconds": user + system, "tokens_per_s": length / seconds, "peak_rss_mib": after.ru_maxrss / 1024}


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
    parser.add_argument("--child", choices=MEMORY_METHODS + ["full"])
    parser.add_argument("--length", type=int)
    parser.add_argument("--full-max", type=int, default=32768, help="longest full-attention run (its position table size)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per run (1 by default: on a shared 2-core machine, 2 threads oversubscribe and time becomes noise)")
    parser.add_argument("--min-seconds", type=float, default=4.0, help="repeat a run until this much wall time has passed")
    parser.add_argument("--quick", action="store_true", help="lengths up to 64k only (no 1M ratios)")
    parser.add_argument("--methods", default=",".join(MEMORY_METHODS + ["full"]), help="comma-separated subset of methods")
    parser.add_argument("--no-10m", action="store_true", help="leave out RMT's 10M-token run")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.length, args.full_max, args.threads, args.min_seconds)))
        return

    from tqdm import tqdm

    methods = [m for m in args.methods.split(",") if m]
    lengths = [n for n in LENGTHS if not args.quick or n <= 65536]
    # Interleaved: every length runs all methods back to back.
    jobs = [(method, n) for n in lengths for method in methods if method != "full" or n <= args.full_max]
    if "rmt" in methods and not args.quick and not args.no_10m:
        jobs.append(("rmt", TEN_MILLION))
    rows = {}
    started = time.perf_counter()
    for method, n in tqdm(jobs, desc="bench", unit="run"):
        rows[(method, n)] = run_child(method, n, args.full_max, args.threads, args.min_seconds)

    print(f"\nGPT-2-like {CONFIG}, segment_size={SEGMENT}, num_mem_tokens={MEM_TOKENS}, ARMT d_mem=64 nu=3, "
          f"threads={args.threads}, full attention up to {_label(args.full_max)} positions")
    print(f"{'method':<10}{'tokens':>8}{'runs':>6}{'s/run':>9}{'tokens/s':>11}{'us/token':>10}{'cpu us/tok':>12}"
          f"{'user':>8}{'sys':>7}{'peak RSS MiB':>14}")
    for method in methods:
        for n in lengths + [TEN_MILLION]:
            r = rows.get((method, n))
            if r is None:
                continue
            print(f"{method:<10}{_label(n):>8}{r['runs']:>6}{r['seconds']:>9.2f}{r['tokens_per_s']:>11.0f}{1e6 / r['tokens_per_s']:>10.1f}"
                  f"{1e6 * r['cpu_seconds'] / n:>12.1f}{1e6 * r['user_seconds'] / n:>8.1f}{1e6 * r['sys_seconds'] / n:>7.1f}"
                  f"{r['peak_rss_mib']:>14.0f}")
    print(f"total bench wall time {time.perf_counter() - started:.0f} s")

    def ratio(a, b, key):
        return round(rows[a][key] / rows[b][key], 3)

    summary = {}
    if "full" in methods and "rmt" in methods:
        full_lengths = [n for n in lengths if ("full", n) in rows]
        summary["speedup_rmt_over_full_attention"] = {_label(n): ratio(("full", n), ("rmt", n), "seconds") for n in full_lengths}
        summary["cpu_speedup_rmt_over_full_attention"] = {_label(n): ratio(("full", n), ("rmt", n), "cpu_seconds") for n in full_lengths}
    if "armt" in methods and "armt-diag" in methods:
        summary["diagonal_speedup_over_sequential_armt"] = {_label(n): ratio(("armt", n), ("armt-diag", n), "seconds") for n in lengths}
        summary["cpu_diagonal_speedup_over_sequential_armt"] = {
            _label(n): ratio(("armt", n), ("armt-diag", n), "cpu_seconds") for n in lengths}
        summary["user_cpu_diagonal_speedup_over_sequential_armt"] = {
            _label(n): ratio(("armt", n), ("armt-diag", n), "user_seconds") for n in lengths}
    top = max(lengths)
    if 16384 in lengths:
        for method in methods:
            if method == "full" or (method, top) not in rows:
                continue
            base = rows[(method, 16384)]
            summary[f"{method}_mem_ratio_{_label(top)}_over_16k"] = round(rows[(method, top)]["peak_rss_mib"] / base["peak_rss_mib"], 3)
            summary[f"{method}_time_per_token_ratio_{_label(top)}_over_16k"] = round(base["tokens_per_s"] / rows[(method, top)]["tokens_per_s"], 3)
            summary[f"{method}_cpu_time_per_token_ratio_{_label(top)}_over_16k"] = round(
                (rows[(method, top)]["cpu_seconds"] / top) / (base["cpu_seconds"] / 16384), 3)
    if ("rmt", TEN_MILLION) in rows and ("rmt", 1048576) in rows:
        one, ten = rows[("rmt", 1048576)], rows[("rmt", TEN_MILLION)]
        summary["rmt_1M"] = {"tokens_per_s": round(one["tokens_per_s"]), "peak_rss_mib": round(one["peak_rss_mib"])}
        summary["rmt_10M"] = {"tokens_per_s": round(ten["tokens_per_s"]), "peak_rss_mib": round(ten["peak_rss_mib"])}
        summary["rmt_mem_ratio_10M_over_1M"] = round(ten["peak_rss_mib"] / one["peak_rss_mib"], 3)
        summary["rmt_time_per_token_ratio_10M_over_1M"] = round(one["tokens_per_s"] / ten["tokens_per_s"], 3)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
