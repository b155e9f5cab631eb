"""RMT on the real pretrained model (smollm2-135m): streaming vs full attention, and a training step
vs the official RMT code, side by side in one run (issue 16, item 6). A bench, not a test.

The model is the registered ``smollm2-135m`` (SmolLM2-135M-Instruct: LlamaForCausalLM, 30 layers,
hidden 576, 9/3 heads GQA, RoPE, tied embeddings, 8k window), loaded from the rmt cache
(``rmt.models.resolve``) with ``attn_implementation="sdpa"``. RMT: segments of ``--segment`` (512)
tokens with ``--mem`` (16) memory tokens, i.e. ``[16 memory; 512 tokens; 16 memory]`` = 544
positions per segment. Inputs are seeded random token ids.

Parts (``--parts``, in this order):

* ``train``: one training step (forward, backward, AdamW with lr=0 so every round sees the same
  weights) on ``--train-batch`` (1) row(s) of 2 segments of 512 tokens, in this process, fp32. First
  the equality check: ours and the official ``RecurrentWrapper``/``MemoryCell`` (from ``--official
  DIR``, a checkout of github.com/booydar/recurrent-memory-transformer; never part of this repo)
  and the bare loop over the base model (``floor``) must give the same loss and logits (tolerance
  1e-4 relative on the loss, 1e-3 absolute on the logits: a correctness check, not a rounding
  check). Methods: with labels on every token (``lm``): official, floor, ours
  (``model(ids, labels=ids)``: every token's logits, the official code's arithmetic); with labels
  on the last 4 tokens of each row only (``qa``): official (it computes every logit whatever the
  labels) and ours with ``output_logits=False`` (only the logits the loss reads). Rounds
  interleaved (``--train-rounds``), medians of wall and CPU time.
* ``stream``: at 1k, 2k, 4k, 8k tokens, RMT ``model.stream(chunks of 4096)`` vs the base model's
  own forward on the whole input (full attention, SDPA, no KV cache) with ``logits_to_keep=512``,
  both under ``torch.no_grad``. Comparable work: both run every layer on every input position
  (RMT: plus 32 memory positions per segment) and both compute the logits of the last 512 tokens
  only (``stream`` returns the last segment's logits and computes no others; the full forward
  keeps the last 512). ``--rounds`` (3) interleaved rounds (every length, both methods, in an
  order that alternates between rounds), median per (method, length). Then, as an extra row, both
  at ``--bf16-length`` (4k) with the model loaded in bf16 (``dtype=torch.bfloat16``: weights,
  activations and RMT's memory in bf16; this CPU has AVX512-BF16).
* ``long``: RMT alone at ``--long-first`` (16k; fp32 and bf16) and at ``--long-lengths`` (32k, 64k, 128k) in bf16
  (fp32 at 128k would take ~15-20 minutes of this shared machine: extrapolated from the 16k fp32
  row instead), one run each.

Every (method, length, dtype) measurement of ``stream`` and ``long`` runs in its own fresh
subprocess (this script with ``--worker``): load the model, warm up on one segment, note the RSS,
reset the process's peak RSS (``/proc/self/clear_refs``: 5), time the call, read the peak RSS of
the process's address space (``VmHWM``). Not ``getrusage(RUSAGE_SELF).ru_maxrss``: the kernel
also keeps in it peaks taken before the reset (the parent's peak RSS across the spawn, vfork +
exec, and this process's peak when a thread exits, e.g. the weight loader's), which no reset
clears; it is recorded as ``ru_maxrss_mib`` beside the rest (the training part runs in its own
subprocess too, so the parent stays small). Reported: seconds per 1k tokens (wall, and CPU = user + sys
of the measuring process, the steadier number on a shared machine), the peak RSS during the timed
call (which includes the resident model), the model-loaded baseline RSS just before it, the
increment (peak - baseline) and the process's peak including loading. Ratios are RMT / full of
seconds per 1k tokens (below 1: RMT faster); the crossover is interpolated linearly in log2(length)
between the two measured lengths where the ratio passes 1.

    python bench/real_model.py --official /tmp/official-rmt --out results/bench-real-model   # ~30 min, 1 thread
    python bench/real_model.py --quick                       # smoke: 1 round, 1k-2k, bf16 at 1k, long at 2k, 1 training round

Prints the tables and ends with one JSON line (also written to ``--out``: ``results.json``, the
Markdown tables ``results.md`` and every raw measurement ``raw.jsonl``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rmt.outputs import bench_out_or_exit, start_bench_output

MODEL = "smollm2-135m"
CHUNK = 4096
ANSWER_TOKENS = 4


def _label(n: int) -> str:
    return f"{n // 1024}k"


def _rss_now_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _hwm_mib() -> float:
    """This address space's peak RSS (VmHWM; what ``/proc/self/clear_refs`` resets)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _maxrss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return platform.machine()
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), platform.machine())
    return name + (", AVX512-BF16" if "avx512_bf16" in text else "")


def _cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _load_base(dtype_name: str):
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    from rmt import models

    logging.set_verbosity_error()
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    return AutoModelForCausalLM.from_pretrained(models.resolve(MODEL), attn_implementation="sdpa", dtype=dtype)


# ------------------------------------------------------------------------------ one measurement (a fresh process)
def worker(method: str, length: int, dtype_name: str, segment: int, mem: int) -> dict:
    import torch

    torch.set_num_threads(1)
    start = time.perf_counter()
    base = _load_base(dtype_name).eval()
    vocab = base.config.vocab_size
    model = None
    if method == "rmt":
        from rmt import RMTConfig, RecurrentMemoryTransformer

        torch.manual_seed(1)
        model = RecurrentMemoryTransformer.wrap(base, RMTConfig(num_mem_tokens=mem, segment_size=segment)).eval()
    load_seconds = time.perf_counter() - start
    ids = torch.randint(0, vocab, (1, length), generator=torch.Generator().manual_seed(length))

    def run(x):
        if method == "rmt":
            state = model.stream(x[:, i : i + CHUNK] for i in range(0, x.shape[1], CHUNK))
            assert state.n_tokens == x.shape[1]
            return state.logits
        return base(x, logits_to_keep=segment, use_cache=False).logits

    with torch.no_grad():
        run(ids[:, :segment])  # warm-up: one segment
        load_peak = _hwm_mib()
        baseline = _rss_now_mib()
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset the peak RSS (VmHWM, ru_maxrss) to the current RSS
            reset = True
        except OSError:
            reset = False
        wall, cpu = time.perf_counter(), _cpu_seconds()
        logits = run(ids)
        wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
    run_peak = _hwm_mib()
    assert logits.shape[-2] == segment and bool(torch.isfinite(logits).all())
    return {"method": method, "length": length, "dtype": dtype_name, "seconds": wall, "cpu_seconds": cpu,
            "s_per_1k": wall / length * 1024, "cpu_s_per_1k": cpu / length * 1024,
            "peak_rss_mib": round(run_peak if reset else max(run_peak, load_peak), 1),
            "baseline_rss_mib": round(baseline, 1), "increment_mib": round((run_peak if reset else max(run_peak, load_peak)) - baseline, 1),
            "process_peak_mib": round(max(load_peak, run_peak), 1), "peak_reset": reset,
            "ru_maxrss_mib": round(_maxrss_mib(), 1), "load_seconds": round(load_seconds, 2), "loadavg": os.getloadavg()[0]}


def measure(method: str, length: int, dtype_name: str, args, raw) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, "--length", str(length), "--dtype", dtype_name,
           "--segment", str(args.segment), "--mem", str(args.mem)]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{method} {dtype_name} at {length} tokens failed:\n{result.stderr[-3000:]}")
    row = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"  {method:<5}{dtype_name:<5}{_label(length):>6}: {row['s_per_1k']:7.2f} s/1k wall, {row['cpu_s_per_1k']:6.2f} cpu, "
          f"peak RSS {row['peak_rss_mib']:.0f} MiB (baseline {row['baseline_rss_mib']:.0f}), load avg {row['loadavg']:.1f}",
          flush=True)
    raw.write(json.dumps(row) + "\n")
    raw.flush()
    return row


# ------------------------------------------------------------------------------ training (this process)
def training(args) -> dict:
    import torch
    from torch.nn import functional as F

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from workloads import load_official

    from rmt import RMTConfig, RecurrentMemoryTransformer

    torch.set_num_threads(1)
    seg, mem, n_seg, batch = args.segment, args.mem, 2, args.train_batch
    base = _load_base("fp32")
    torch.manual_seed(1)
    ours = RecurrentMemoryTransformer.wrap(base, RMTConfig(num_mem_tokens=mem, segment_size=seg))
    official = None
    if args.official:
        memory_cell, recurrent_wrapper = load_official(args.official)
        cell = memory_cell(base, mem)
        with torch.no_grad():
            cell.memory.copy_(ours.memory)
        official = recurrent_wrapper(cell, segment_size=seg, max_n_segments=n_seg)
    ids = torch.randint(0, base.config.vocab_size, (batch, n_seg * seg), generator=torch.Generator().manual_seed(seg))
    labels = {"lm": ids.clone(), "qa": torch.full_like(ids, -100)}
    labels["qa"][:, -ANSWER_TOKENS:] = ids[:, -ANSWER_TOKENS:]

    def floor(target):
        """The bare loop: [memory; segment; memory] through the base model, the segment's logits, the
        last hidden states (after the final norm) at the write positions carried; HF's shifted loss."""
        inner, embed, head = base.model, base.get_input_embeddings(), base.get_output_embeddings()
        state = ours.memory[None].expand(ids.shape[0], -1, -1)
        logits = []
        for start in range(0, ids.shape[1], seg):
            x = torch.cat([state, embed(ids[:, start : start + seg]), state], dim=1)
            hidden = inner(inputs_embeds=x, use_cache=False).last_hidden_state
            logits.append(head(hidden[:, mem:-mem]))
            state = hidden[:, -mem:]
        logits = torch.cat(logits, dim=1)
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), target[:, 1:].reshape(-1), ignore_index=-100), logits

    # equality before timing (eval mode, no gradient)
    ours.eval()
    checks = {}
    with torch.no_grad():
        for kind in ("lm", "qa"):
            reference = ours(ids, labels=labels[kind])
            loss = float(reference.loss)
            others = {"floor": floor(labels[kind])} if kind == "lm" else \
                {"ours nologits": (ours(ids, labels=labels[kind], output_logits=False).loss, None)}
            if official is not None:
                out = official(input_ids=ids, labels=labels[kind])
                others["official"] = (out["loss"], out["logits"])
            for name, (other_loss, other_logits) in others.items():
                row = {"loss_ours": loss, "loss_other": float(other_loss), "loss_abs_diff": abs(float(other_loss) - loss)}
                if other_logits is not None:
                    row["logits_max_abs_diff"] = float((other_logits - reference.logits).abs().max())
                row["ok"] = row["loss_abs_diff"] <= 1e-4 * max(1.0, abs(loss)) and row.get("logits_max_abs_diff", 0.0) <= 1e-3
                checks[f"{kind} / {name} vs ours"] = row
                print(f"  equality {kind:<3}{name:<14}: loss {float(other_loss):.6f} vs ours {loss:.6f} "
                      f"(|diff| {row['loss_abs_diff']:.2e}), logits max |diff| {row.get('logits_max_abs_diff', float('nan')):.2e}"
                      f" -> {'ok' if row['ok'] else 'MISMATCH'}", file=sys.stderr, flush=True)
    if not all(c["ok"] for c in checks.values()):
        print("  equality failed: training timings skipped", file=sys.stderr, flush=True)
        return {"equality": checks, "timed": False}

    ours.train()
    if official is not None:
        official.train()
    params = {id(p): p for p in list(ours.parameters()) + (list(official.parameters()) if official is not None else [])}
    optimizer = torch.optim.AdamW(params.values(), lr=0.0, weight_decay=0.0)  # one optimizer: one copy of the states

    def step(loss_fn):
        def run():
            loss = loss_fn()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return run

    methods = {}
    if official is not None:
        methods["lm / official"] = step(lambda: official(input_ids=ids, labels=labels["lm"])["loss"])
    methods["lm / floor"] = step(lambda: floor(labels["lm"])[0])
    methods["lm / ours"] = step(lambda: ours(ids, labels=labels["lm"]).loss)
    if official is not None:
        methods["qa / official"] = step(lambda: official(input_ids=ids, labels=labels["qa"])["loss"])
    methods["qa / ours nologits"] = step(lambda: ours(ids, labels=labels["qa"], output_logits=False).loss)

    methods["lm / ours"]()  # warm-up: AdamW's states (the base model's, shared by every method), allocator
    times = {name: [] for name in methods}
    for r in range(args.train_rounds):
        order = list(methods) if r % 2 == 0 else list(reversed(methods))
        for name in order:
            wall, cpu = time.perf_counter(), _cpu_seconds()
            methods[name]()
            times[name].append((time.perf_counter() - wall, _cpu_seconds() - cpu))
            print(f"  round {r + 1} {name:<20}: {times[name][-1][0]:6.1f} s wall, {times[name][-1][1]:6.1f} s cpu, "
                  f"load avg {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
    tokens = ids.numel()
    result = {"equality": checks, "timed": True, "tokens_per_step": tokens, "rounds": args.train_rounds, "methods": {}}
    for name in methods:
        wall = statistics.median(t for t, _ in times[name])
        cpu = statistics.median(c for _, c in times[name])
        result["methods"][name] = {"tokens_per_s": tokens / wall, "cpu_tokens_per_s": tokens / cpu,
                                   "wall_s": [round(t, 2) for t, _ in times[name]], "cpu_s": [round(c, 2) for _, c in times[name]]}
    for name, row in result["methods"].items():
        labels_kind = name.split(" / ")[0]
        ref = result["methods"].get(f"{labels_kind} / official")
        if ref is not None and not name.endswith("official"):
            row["x_official"] = row["tokens_per_s"] / ref["tokens_per_s"]
            row["cpu_x_official"] = row["cpu_tokens_per_s"] / ref["cpu_tokens_per_s"]
    return result


def run_training(args) -> dict:
    cmd = [sys.executable, __file__, "--train-worker", "--segment", str(args.segment), "--mem", str(args.mem),
           "--train-batch", str(args.train_batch), "--train-rounds", str(args.train_rounds)]
    if args.official:
        cmd += ["--official", args.official]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    result = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env)  # its progress lines (stderr) show as they come
    if result.returncode != 0:
        raise RuntimeError("the training part failed")
    return json.loads(result.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------ the comparison and its report
def crossover(lengths, ratios):
    """The length where ratio (RMT / full) passes below 1, interpolated in log2(length)."""
    if ratios[0] <= 1:
        return f"RMT already faster at {_label(lengths[0])} (the shortest measured length)"
    for (l0, r0), (l1, r1) in zip(zip(lengths, ratios), zip(lengths[1:], ratios[1:])):
        if r0 > 1 >= r1:
            x = math.log2(l0) + (r0 - 1) / (r0 - r1) * (math.log2(l1) - math.log2(l0))
            return f"~{round(2**x)} tokens (between {_label(l0)} and {_label(l1)})"
    return f"not within {_label(lengths[-1])}"


def stream_part(args, raw) -> dict:
    rows = {}
    for r in range(args.rounds):
        print(f"round {r + 1}/{args.rounds}", flush=True)
        for length in args.lengths:
            order = ("rmt", "full") if (r + args.lengths.index(length)) % 2 == 0 else ("full", "rmt")
            for method in order:
                rows.setdefault((method, length, "fp32"), []).append(measure(method, length, "fp32", args, raw))
        if args.bf16_length:
            for method in ("rmt", "full") if r % 2 == 0 else ("full", "rmt"):
                rows.setdefault((method, args.bf16_length, "bf16"), []).append(measure(method, args.bf16_length, "bf16", args, raw))
    table = []
    for (method, length, dtype), runs in rows.items():
        table.append({"method": method, "length": length, "dtype": dtype, "runs": len(runs),
                      **{k: statistics.median(x[k] for x in runs) for k in
                         ("s_per_1k", "cpu_s_per_1k", "peak_rss_mib", "baseline_rss_mib", "increment_mib", "process_peak_mib")}})
    comparisons = []
    for length, dtype in [(n, "fp32") for n in args.lengths] + ([(args.bf16_length, "bf16")] if args.bf16_length else []):
        a = next(t for t in table if t["method"] == "rmt" and t["length"] == length and t["dtype"] == dtype)
        b = next(t for t in table if t["method"] == "full" and t["length"] == length and t["dtype"] == dtype)
        comparisons.append({"length": length, "dtype": dtype, "ratio_wall": a["s_per_1k"] / b["s_per_1k"],
                            "ratio_cpu": a["cpu_s_per_1k"] / b["cpu_s_per_1k"],
                            "peak_rss_ratio": a["peak_rss_mib"] / b["peak_rss_mib"]})
    fp32 = [c for c in comparisons if c["dtype"] == "fp32"]
    return {"table": table, "comparisons": comparisons,
            "crossover_wall": crossover([c["length"] for c in fp32], [c["ratio_wall"] for c in fp32]),
            "crossover_cpu": crossover([c["length"] for c in fp32], [c["ratio_cpu"] for c in fp32])}


def long_part(args, raw) -> dict:
    rows = []
    for length, dtype in [(args.long_first, "fp32"), (args.long_first, "bf16")] + [(n, "bf16") for n in args.long_lengths]:
        row = measure("rmt", length, dtype, args, raw)
        rows.append({k: row[k] for k in ("method", "length", "dtype", "s_per_1k", "cpu_s_per_1k", "peak_rss_mib",
                                          "baseline_rss_mib", "increment_mib", "process_peak_mib")} | {"runs": 1})
    fp32 = next(r for r in rows if r["dtype"] == "fp32")
    return {"table": rows, "fp32_128k_extrapolated_minutes": round(fp32["s_per_1k"] * 128 / 60, 1),
            "bf16_speedup_at_first_length": fp32["s_per_1k"] / rows[1]["s_per_1k"]}


def markdown(summary: dict) -> str:
    out = [f"# RMT on {MODEL}: streaming vs full attention, training vs the official RMT code", "",
           f"- command: `{summary['command']}`", f"- date: {summary['date']}", f"- commit: {summary['commit']}",
           f"- machine: {summary['machine']}", f"- load average before / after: {summary['load_average_before']} / "
           f"{summary['load_average_after']}; wall time {summary['wall_minutes']} min", ""]
    seg, mem = summary["segment"], summary["mem"]
    if "stream" in summary or "long" in summary:
        out += [f"RMT: `stream`, segments of {seg} tokens + {mem} memory tokens (read and write copies: {seg + 2 * mem} "
                f"positions per segment). Full: one forward over the whole input, SDPA, no cache, `logits_to_keep={seg}` "
                f"(both compute the logits of the last {seg} tokens only). Wall and CPU (user+sys of the measuring process) "
                "seconds per 1k tokens; peak RSS during the timed call (model included), baseline = RSS of the loaded, "
                "warmed-up model just before it. Each cell: its own fresh process; median over rounds.", "",
                "| tokens | dtype | RMT s/1k (cpu) | full s/1k (cpu) | RMT/full wall (cpu) | RMT peak RSS MiB (baseline) | full peak RSS MiB (baseline) |",
                "|---:|---|---:|---:|---:|---:|---:|"]
    if "stream" in summary:
        table = summary["stream"]["table"]
        for c in summary["stream"]["comparisons"]:
            a = next(t for t in table if t["method"] == "rmt" and t["length"] == c["length"] and t["dtype"] == c["dtype"])
            b = next(t for t in table if t["method"] == "full" and t["length"] == c["length"] and t["dtype"] == c["dtype"])
            out.append(f"| {_label(c['length'])} | {c['dtype']} | {a['s_per_1k']:.2f} ({a['cpu_s_per_1k']:.2f}) | "
                       f"{b['s_per_1k']:.2f} ({b['cpu_s_per_1k']:.2f}) | {c['ratio_wall']:.2f} ({c['ratio_cpu']:.2f}) | "
                       f"{a['peak_rss_mib']:.0f} ({a['baseline_rss_mib']:.0f}) | {b['peak_rss_mib']:.0f} ({b['baseline_rss_mib']:.0f}) |")
    if "long" in summary:
        for r in summary["long"]["table"]:
            out.append(f"| {_label(r['length'])} | {r['dtype']} | {r['s_per_1k']:.2f} ({r['cpu_s_per_1k']:.2f}) | - | - | "
                       f"{r['peak_rss_mib']:.0f} ({r['baseline_rss_mib']:.0f}) | - |")
    if "stream" in summary:
        s = summary["stream"]
        out += ["", f"RMT overtakes full attention (fp32, ratio passes below 1): wall time: {s['crossover_wall']}; "
                    f"CPU time: {s['crossover_cpu']}."]
    if "long" in summary:
        first = _label(summary["long"]["table"][0]["length"])
        out += [f"RMT fp32 at 128k, extrapolated from the {first} fp32 row: {summary['long']['fp32_128k_extrapolated_minutes']} min "
                f"(bf16 is {summary['long']['bf16_speedup_at_first_length']:.2f}x fp32 at {first}, wall)."]
    if "train" in summary:
        t = summary["train"]
        out += ["", f"Training step (forward, backward, AdamW lr=0), fp32, {summary['train_batch']} rows x 2 segments of "
                    f"{seg} tokens (+{mem} memory tokens), `lm`: labels on every token, `qa`: labels on the last "
                    f"{ANSWER_TOKENS} tokens of each row; equality first (eval mode, no gradient):", "",
                "| check | loss ours | loss other | abs diff | logits max abs diff | ok |", "|---|---:|---:|---:|---:|---|"]
        for name, c in t["equality"].items():
            out.append(f"| {name} | {c['loss_ours']:.6f} | {c['loss_other']:.6f} | {c['loss_abs_diff']:.1e} | "
                       f"{c.get('logits_max_abs_diff', float('nan')):.1e} | {c['ok']} |")
        if t.get("timed"):
            out += ["", f"Median of {t['rounds']} interleaved rounds, {t['tokens_per_step']} tokens per step:", "",
                    "| labels / method | tokens/s wall | tokens/s cpu | x official wall (cpu) | step wall s (rounds) |",
                    "|---|---:|---:|---:|---|"]
            for name, m in t["methods"].items():
                x = f"{m['x_official']:.2f} ({m['cpu_x_official']:.2f})" if "x_official" in m else "-"
                out.append(f"| {name} | {m['tokens_per_s']:.1f} | {m['cpu_tokens_per_s']:.1f} | {x} | "
                           f"{', '.join(f'{w:.1f}' for w in m['wall_s'])} |")
    return "\n".join(out) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", choices=["rmt", "full"], help=argparse.SUPPRESS)
    parser.add_argument("--length", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help=argparse.SUPPRESS)
    parser.add_argument("--train-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--parts", default="train,stream,long", help="comma-separated subset of train, stream, long")
    parser.add_argument("--official", default=None, help="a checkout of github.com/booydar/recurrent-memory-transformer")
    parser.add_argument("--segment", type=int, default=512)
    parser.add_argument("--mem", type=int, default=16)
    parser.add_argument("--lengths", default="1024,2048,4096,8192", help="RMT vs full attention (the model's window is 8192)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bf16-length", type=int, default=4096, help="the extra bf16 row (0: none)")
    parser.add_argument("--long-first", type=int, default=16384, help="RMT alone in fp32 and bf16 at this length")
    parser.add_argument("--long-lengths", default="32768,65536,131072", help="RMT alone, bf16")
    parser.add_argument("--train-batch", type=int, default=1)
    parser.add_argument("--train-rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round at 1k-2k, bf16 at 1k, long at 2k only, 1 training round")
    parser.add_argument("--out", default=None, help="directory for results.json, results.md, raw.jsonl (new, empty "
                        "or written by this bench before; never a directory of yours)")
    parser.add_argument("--overwrite", action="store_true", help="write into an --out this bench did not write")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.length, args.dtype, args.segment, args.mem)))
        return
    if args.train_worker:
        print(json.dumps(training(args)))
        return
    out_dir = bench_out_or_exit(parser, args.out, "real_model", args.overwrite)  # before any work
    args.lengths = [int(x) for x in args.lengths.split(",") if x]
    args.long_lengths = [int(x) for x in args.long_lengths.split(",") if x]
    if args.quick:
        args.lengths, args.rounds, args.bf16_length, args.long_first, args.long_lengths = [1024, 2048], 1, 1024, 2048, []
        args.train_rounds = 1
    parts = [p for p in args.parts.split(",") if p]
    repo = Path(__file__).resolve().parent.parent
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    if out_dir:
        start_bench_output(out_dir, "real_model")
    raw = open(out_dir / "raw.jsonl", "w") if out_dir else open(os.devnull, "w")
    started = time.perf_counter()
    summary = {"command": "python " + " ".join([os.path.relpath(__file__, repo)] + sys.argv[1:]),
               "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "commit": commit,
               "machine": f"{os.cpu_count()}-core CPU ({_cpu_name()}), no GPU, 1 torch thread, "
                          "shared with other jobs", "model": MODEL, "segment": args.segment, "mem": args.mem,
               "train_batch": args.train_batch, "load_average_before": " ".join(f"{x:.2f}" for x in os.getloadavg())}
    print(f"{MODEL}: segments of {args.segment} + {args.mem} memory tokens; parts {parts}; commit {commit}; "
          f"load average {summary['load_average_before']}", flush=True)
    for part in parts:
        print(f"== {part}", flush=True)
        if part == "train":  # its own process too: this one stays small (its RSS is inherited by the workers' ru_maxrss)
            summary["train"] = run_training(args)
        elif part == "stream":
            summary["stream"] = stream_part(args, raw)
        elif part == "long":
            summary["long"] = long_part(args, raw)
        else:
            raise SystemExit(f"unknown part {part!r}")
        if out_dir:  # what is done so far, in case a later part fails
            (out_dir / "results.partial.json").write_text(json.dumps(summary, indent=1) + "\n")
    raw.close()
    summary["load_average_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    summary["wall_minutes"] = round((time.perf_counter() - started) / 60, 1)
    text = markdown(summary)
    print(text)
    if out_dir:
        (out_dir / "results.md").write_text(text)
        (out_dir / "results.json").write_text(json.dumps(summary, indent=1) + "\n")
        (out_dir / "results.partial.json").unlink(missing_ok=True)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
