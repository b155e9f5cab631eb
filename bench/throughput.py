"""Training and streaming throughput of our RMT vs the floor any wrapper can reach, the official RMT
code and the matmul roofline, side by side in one run (issue 12).

The model and workloads are bench/workloads.py's: GPT-2 4 x 256, vocabulary 5000, 16 memory tokens,
fp32; a training step (forward, backward, AdamW) on 2 rows of 16 x 128 or 4 x 512 tokens with
labels on every token (``lm``) or on a 4-token answer at the end (``qa``); streaming 64k tokens in
segments of 128. Methods:

* ``official``: github.com/booydar/recurrent-memory-transformer's ``RecurrentWrapper`` (training) and
  its ``MemoryCell`` in a loop (streaming), from the checkout ``--official DIR`` (skipped without it;
  the official code never enters this repository);
* ``floor``: a bare loop calling the base model on ``[memory; segment; memory]`` (workloads.py);
* ``ours``: ``model(ids, labels=labels)``, ``model.stream(chunks)``;
* ``ours nologits``: ``model(ids, labels=labels, output_logits=False)`` (only the logits the loss reads);
* ``gated nologits`` / ``gated``: the same with ``memory_write="gated"``;
* ``compiled nologits`` / ``compiled``: ``ours`` after ``model.compile_layers()`` (opt-in: equal up
  to float rounding, not bit for bit; compiled during the warm-up, on its own copy of the weights).

All methods share one base model (AdamW with lr=0: the weights never change). Rounds are
interleaved (every round runs every method at every thread count, one after the other) and the
median of the rounds is kept, for wall time and for this process's CPU time (on a shared machine
CPU time is the steadier of the two). ``roofline`` is the time the workload's necessary FLOPs
would take at this CPU's matmul rate (a 1024^3 fp32 matmul, measured in the same round), divided
by the measured time. Necessary FLOPs (workloads.py): every layer on every position of
``[memory; segment; memory]`` except the last layer's rows nobody reads, plus the output layer
where a loss reads it (``lm``: every token; ``qa``: the answer), forward and backward; a method
that computes more (the official code's logits everywhere) gets a lower fraction for it.

    python bench/throughput.py --official /path/to/recurrent-memory-transformer   # ~10 min on 2 shared cores
    python bench/throughput.py --quick                                           # 1 round, 16k streamed

Prints a table per thread count and ends with one JSON line: per thread count, workload and
method, tokens/s (median wall) and the speed-ups over the official code and over the floor (wall
and CPU); the load average before and after.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workloads as W  # noqa: E402


def training_methods(official_module, labels: str, segment: int, n_segments: int, compiled: bool, bf16: bool):
    """{name: (step function, tokens per step, nominal FLOPs)} for one training workload."""
    base = W.build_base(segment)
    ours = W.build_ours(base, segment).train()
    gated = W.build_ours(base, segment, memory_write="gated").train()
    ids, target = W.batch(segment, n_segments, labels)
    methods = {}
    if official_module is not None:
        official = W.build_official(official_module, ours, segment, n_segments).train()
        opt = W.frozen_adamw(official)
        methods["official"] = partial(W.train_step, opt, bf16=bf16, loss_fn=lambda: official(input_ids=ids, labels=target)["loss"])
    opt = W.frozen_adamw(ours)
    methods["floor"] = partial(W.train_step, opt, bf16=bf16, loss_fn=lambda: W.floor_train_loss(base, ours.memory, ids, target, segment))
    methods["ours"] = partial(W.train_step, opt, bf16=bf16, loss_fn=lambda: ours(ids, labels=target).loss)
    methods["ours nologits"] = partial(W.train_step, opt, bf16=bf16, loss_fn=lambda: ours(ids, labels=target, output_logits=False).loss)
    gated_opt = W.frozen_adamw(gated)
    methods["gated nologits"] = partial(W.train_step, gated_opt, bf16=bf16, loss_fn=lambda: gated(ids, labels=target, output_logits=False).loss)
    if compiled:
        fast = W.build_ours(copy.deepcopy(base), segment).train().compile_layers()
        fast_opt = W.frozen_adamw(fast)
        methods["compiled nologits"] = partial(W.train_step, fast_opt, bf16=bf16, loss_fn=lambda: fast(ids, labels=target, output_logits=False).loss)
    return methods, ids.numel(), W.train_flops(segment, n_segments, labels, executed=True)


def streaming_methods(official_module, tokens: int, compiled: bool):
    segment = W.STREAM_SEGMENT
    base = W.build_base(segment).eval()
    ours = W.build_ours(base, segment).eval()
    gated = W.build_ours(base, segment, memory_write="gated").eval()
    ids = torch.randint(0, W.VOCAB, (1, tokens), generator=torch.Generator().manual_seed(7))
    methods = {}
    if official_module is not None:
        official = W.build_official(official_module, ours, segment, tokens // segment).eval()
        methods["official"] = lambda: W.official_stream(official, ids, segment)
    methods["floor"] = lambda: W.floor_stream(base, ours.memory, ids, segment)
    methods["ours"] = lambda: W.ours_stream(ours, ids)
    methods["gated"] = lambda: W.ours_stream(gated, ids)
    if compiled:
        fast = W.build_ours(copy.deepcopy(base), segment).eval().compile_layers()
        methods["compiled"] = lambda: W.ours_stream(fast, ids)
    return methods, tokens, W.stream_flops(executed=True) * tokens / W.STREAM_TOKENS


def check_equal(official_module):
    """Before timing: ours equals the floor and the official code on these workloads (losses, memory)."""
    segment, n_segments = 128, 4
    base = W.build_base(segment)
    ours = W.build_ours(base, segment).eval()
    ids, target = W.batch(segment, n_segments, "lm")
    with torch.no_grad():
        loss = ours(ids, labels=target).loss
        checks = {"floor loss": W.floor_train_loss(base, ours.memory, ids, target, segment),
                  "ours nologits loss": ours(ids, labels=target, output_logits=False).loss}
        stream = W.ours_stream(ours, ids[:1])
        stream_checks = {"floor memory": W.floor_stream(base, ours.memory, ids[:1], segment)}
        if official_module is not None:
            official = W.build_official(official_module, ours, segment, n_segments).eval()
            checks["official loss"] = official(input_ids=ids, labels=target)["loss"]
            stream_checks["official memory"] = W.official_stream(official, ids[:1], segment)
    for name, value in checks.items():
        print(f"  {name}: |difference from ours| = {float((value - loss).abs()):.2e}")
    for name, value in stream_checks.items():
        print(f"  {name}: max |difference from ours| = {float((value - stream).abs().max()):.2e}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--official", default=None, help="a checkout of github.com/booydar/recurrent-memory-transformer")
    parser.add_argument("--threads", default="1,2", help="comma-separated torch thread counts, interleaved")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 round, 16k tokens streamed")
    parser.add_argument("--no-compile", action="store_true", help="leave out the compiled variants (model.compile_layers())")
    parser.add_argument("--bf16", action="store_true",
                        help="run every method under torch.autocast(bfloat16) (rmt train --mixed-precision bf16); the roofline in bf16")
    parser.add_argument("--workloads", default="train-16x128,train-4x512,stream-128",
                        help="comma-separated subset of train-16x128, train-4x512, stream-128")
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",") if t]
    rounds = 1 if args.quick else args.rounds
    stream_tokens = 16384 if args.quick else W.STREAM_TOKENS
    chosen = [w for w in args.workloads.split(",") if w]
    official_module = W.load_official(args.official) if args.official else None
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    load_before = W.load_average()

    from tqdm import tqdm

    print(f"GPT-2 {W.LAYERS} x {W.HIDDEN}, vocabulary {W.VOCAB}, {W.MEM} memory tokens, "
          f"{'bf16 autocast' if args.bf16 else 'fp32'}; threads {threads}; "
          f"{rounds} interleaved rounds; load average {load_before}")
    print("equality before timing:")
    check_equal(official_module)

    workloads = {}
    for name in chosen:
        if name in W.TRAIN:
            segment, n = W.TRAIN[name]
            for labels in ("lm", "qa"):
                workloads[f"{name} {labels}"] = training_methods(official_module, labels, segment, n, not args.no_compile, args.bf16)
        elif name == "stream-128":
            workloads[f"stream-128 {stream_tokens // 1024}k"] = streaming_methods(official_module, stream_tokens, not args.no_compile)
        else:
            raise SystemExit(f"unknown workload {name!r}")
    if args.bf16:  # streaming under autocast too (training: the forward, in train_step)
        def autocast(fn):
            def run():
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return fn()
            return run

        workloads = {w: ({m: autocast(fn) if w.startswith("stream") else fn for m, fn in methods.items()}, tokens, flops)
                     for w, (methods, tokens, flops) in workloads.items()}

    times = {}  # (threads, workload, method) -> [(wall, cpu)]
    roofline = {t: [] for t in threads}
    for t in threads:  # warm-up: every method once at every thread count
        torch.set_num_threads(t)
        for methods, _, _ in workloads.values():
            for fn in methods.values():
                fn()
    jobs = [(t, w, m) for t in threads for w, (methods, _, _) in workloads.items() for m in methods]
    with tqdm(total=rounds * len(jobs), desc="bench", unit="run") as bar:
        for _ in range(rounds):
            for t in threads:
                roofline[t].append(W.matmul_flops_per_second(t, dtype))
                torch.set_num_threads(t)
                for w, (methods, _, _) in workloads.items():
                    for m, fn in methods.items():
                        times.setdefault((t, w, m), []).append(W.timed(fn))
                        bar.update(1)
    load_after = W.load_average()

    summary = {"load_average_before": load_before, "load_average_after": load_after, "rounds": rounds,
               "dtype": "bf16 autocast" if args.bf16 else "fp32"}
    for t in threads:
        rate = W.median(roofline[t])
        print(f"\n{t} thread(s): matmul {rate / 1e9:.1f} GFLOP/s (1024^3 {'bf16' if args.bf16 else 'fp32'}, median of rounds)")
        print(f"{'workload':<22}{'method':<17}{'tokens/s':>10}{'x official':>12}{'(cpu)':>7}{'x floor':>9}{'(cpu)':>7}"
              f"{'roofline':>10}")
        per_thread = {}
        for w, (methods, tokens, flops) in workloads.items():
            wall = {m: W.median([x for x, _ in times[(t, w, m)]]) for m in methods}
            cpu = {m: W.median([c for _, c in times[(t, w, m)]]) for m in methods}
            for m in methods:
                row = {"tokens_per_s": round(tokens / wall[m], 1), "roofline_fraction": round(flops / rate / wall[m], 3)}
                text = f"{w:<22}{m:<17}{tokens / wall[m]:>10.0f}"
                for ref in ("official", "floor"):
                    if ref in wall and m != ref:
                        row[f"speedup_over_{ref}"] = round(wall[ref] / wall[m], 3)
                        row[f"cpu_speedup_over_{ref}"] = round(cpu[ref] / cpu[m], 3)
                        text += f"{wall[ref] / wall[m]:>12.2f}{cpu[ref] / cpu[m]:>7.2f}" if ref == "official" else \
                            f"{wall[ref] / wall[m]:>9.2f}{cpu[ref] / cpu[m]:>7.2f}"
                    else:
                        text += " " * (19 if ref == "official" else 16)
                text += f"{flops / rate / wall[m]:>10.2f}"
                print(text)
                per_thread[f"{w} / {m}"] = row
        summary[f"threads_{t}"] = {"matmul_gflops": round(rate / 1e9, 1), **per_thread}
    print(f"load average before {load_before}, after {load_after}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
