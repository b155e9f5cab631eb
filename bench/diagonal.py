"""ARMT diagonal batching vs the sequential loop on a CPU, across model shapes.

Diagonal batching does the same arithmetic in fewer, larger calls (``L + n - 1`` steps instead of
``n * L`` layer calls), so on a CPU its gain is the per-call overhead it saves: large when calls are
small (short segments, small hidden size, many layers), about none when each call is already a
large matmul. This bench streams ``--tokens`` random tokens through GPT-2-like ARMTs of several
shapes, the two schedules interleaved (``--rounds`` alternations in one process per shape, best
of the rounds kept), and reports wall time and the CPU time of the process split into user and
system time (system time is mostly page faults: freed large tensors go back to the OS under
glibc's default allocator and are faulted in again; ``--tuned-malloc`` sets
``MALLOC_TRIM_THRESHOLD_`` / ``MALLOC_MMAP_THRESHOLD_`` for both schedules to show the difference).

Ends with one JSON line: per shape, sequential / diagonal for wall, CPU and user CPU time, and
the largest difference between the two schedules' final A (0: they round alike).

    python bench/diagonal.py                    # a few minutes on one thread
    python bench/diagonal.py --tuned-malloc
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

# (layers, hidden, segment_size); 16 memory tokens, d_mem 64, one head per 64 hidden.
SHAPES = [(2, 128, 512), (4, 128, 512), (4, 128, 128), (8, 128, 128), (4, 64, 64), (8, 64, 64)]
MEM_TOKENS, CHUNK, VOCAB = 16, 8192, 1024


def child(layers: int, hidden: int, segment: int, tokens: int, rounds: int, threads: int) -> dict:
    import resource

    import torch
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging

    from rmt import RMTConfig, RecurrentMemoryTransformer

    logging.set_verbosity_error()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    base = GPT2LMHeadModel(GPT2Config(n_layer=layers, n_head=max(1, hidden // 64), n_embd=hidden, vocab_size=VOCAB,
                                      n_positions=segment + MEM_TOKENS, bos_token_id=0, eos_token_id=0)).eval()
    model = RecurrentMemoryTransformer.wrap(base, RMTConfig(memory_kind="armt", num_mem_tokens=MEM_TOKENS, segment_size=segment)).eval()
    ids = torch.randint(0, VOCAB, (1, tokens), generator=torch.Generator().manual_seed(0))
    results = {"sequential": [], "diagonal": []}
    states = {}
    model.stream([ids[:, : 4 * segment]], diagonal=False)  # warm-up
    model.stream([ids[:, : 4 * segment]], diagonal=True)
    for _ in range(rounds):
        for name, diagonal in (("sequential", False), ("diagonal", True)):
            before, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            state = model.stream((ids[:, i : i + CHUNK] for i in range(0, tokens, CHUNK)), diagonal=diagonal)
            wall = time.perf_counter() - wall
            after = resource.getrusage(resource.RUSAGE_SELF)
            results[name].append({"wall": wall, "user": after.ru_utime - before.ru_utime, "sys": after.ru_stime - before.ru_stime})
            states[name] = state.memory
    same = float((states["sequential"].A - states["diagonal"].A).abs().max())
    best = {name: {key: min(r[key] for r in runs) for key in ("wall", "user", "sys")} for name, runs in results.items()}
    for runs in best.values():
        runs["cpu"] = runs["user"] + runs["sys"]
    return {"shape": [layers, hidden, segment], "tokens": tokens, "best": best, "max_abs_diff_A": same}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", nargs=3, type=int, metavar=("LAYERS", "HIDDEN", "SEGMENT"))
    parser.add_argument("--tokens", type=int, default=65536)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tuned-malloc", action="store_true", help="run with glibc trimming/mmap thresholds raised (both schedules)")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.tokens, args.rounds, args.threads)))
        return
    from tqdm import tqdm

    env = dict(os.environ)
    if args.tuned_malloc:
        env.update(MALLOC_TRIM_THRESHOLD_="536870912", MALLOC_MMAP_THRESHOLD_="268435456")
    rows = []
    for shape in tqdm(SHAPES, desc="bench", unit="shape"):
        cmd = [sys.executable, __file__, "--child", *map(str, shape), "--tokens", str(args.tokens), "--rounds", str(args.rounds),
               "--threads", str(args.threads)]
        result = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if result.returncode != 0:
            raise RuntimeError(f"shape {shape} failed:\n{result.stderr[-2000:]}")
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))

    print(f"\nARMT (GPT-2-like, {MEM_TOKENS} memory tokens, d_mem 64), {args.tokens} tokens streamed, threads={args.threads}, "
          f"best of {args.rounds} interleaved rounds, tuned malloc: {args.tuned_malloc}")
    print(f"{'layers':>6}{'hidden':>7}{'segment':>8} | {'seq wall':>9}{'diag wall':>10}{'x':>6} | {'seq cpu':>8}{'diag cpu':>9}{'x':>6}"
          f" | {'seq user':>9}{'diag user':>10}{'x':>6} | {'diag sys':>9}")
    summary = {}
    for row in rows:
        s, d = row["best"]["sequential"], row["best"]["diagonal"]
        label = "L{}-H{}-seg{}".format(*row["shape"])
        ratios = {key: round(s[key] / d[key], 3) for key in ("wall", "cpu", "user")}
        summary[label] = dict(ratios, max_abs_diff_A=row["max_abs_diff_A"])
        print(f"{row['shape'][0]:>6}{row['shape'][1]:>7}{row['shape'][2]:>8} | {s['wall']:>9.2f}{d['wall']:>10.2f}{ratios['wall']:>6.2f}"
              f" | {s['cpu']:>8.2f}{d['cpu']:>9.2f}{ratios['cpu']:>6.2f} | {s['user']:>9.2f}{d['user']:>10.2f}{ratios['user']:>6.2f}"
              f" | {d['sys']:>9.2f}")
    print(json.dumps({"diagonal_speedup_over_sequential": summary, "tokens": args.tokens, "tuned_malloc": args.tuned_malloc}))


if __name__ == "__main__":
    main()
