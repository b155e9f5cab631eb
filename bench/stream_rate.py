"""How close a memory model's stream comes to this machine's own matmul rate, and minutes per 1M tokens.

Wraps a pretrained model (smollm2-135m by default) with fresh memory (segments of `--segment` +
`--mem` memory tokens), streams `--tokens` random token ids through it (`model.stream`, chunks of
`--chunk`), and in the same run measures the matrix-product rate of the model's own layer shapes at
one segment's rows (`--segment` + 2 x `--mem`), for each precision: float32 weights, and bf16
weights (what `--dtype auto` picks where bf16 is native, rmt/precision.py). Rounds alternate the
order so that load drift penalises every row alike; medians are reported.

    fraction = tokens/s x FLOP per token / matmul FLOP/s (the same precision, the same threads)

FLOP per token counts the layers' products (q, k, v, o, the MLP) and attention's two products over
the whole segment (segment + 2 x memory positions; causal masking saves nothing on CPU SDPA), times
(segment + 2 x memory) / segment; no output layer (a stream computes no logits). For smollm2-135m,
segments of 512 + 16: ~0.265 GFLOP per token.

    python bench/stream_rate.py                              # both precisions, 2 threads, ~3 min
    python bench/stream_rate.py --threads 1 --tokens 8192 --rounds 1
    python bench/stream_rate.py --out results/stream-rate    # also results.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

from rmt.outputs import bench_out_or_exit, start_bench_output


def flop_per_token(config, segment: int, mem: int) -> float:
    h = config.hidden_size
    heads = config.num_attention_heads
    kv = h // heads * getattr(config, "num_key_value_heads", heads)
    mlp = config.intermediate_size
    positions = segment + 2 * mem
    per_position = 2 * (2 * h * h + 2 * h * kv) + 2 * 3 * h * mlp + 2 * 2 * positions * h
    return config.num_hidden_layers * per_position * positions / segment


def attention_flop_per_token(config, segment: int, mem: int) -> float:
    positions = segment + 2 * mem
    return config.num_hidden_layers * 2 * 2 * positions * config.hidden_size * positions / segment


def shapes(config) -> list[tuple[int, int]]:
    h = config.hidden_size
    kv = h // config.num_attention_heads * getattr(config, "num_key_value_heads", config.num_attention_heads)
    mlp = config.intermediate_size
    return [(h, h), (h, kv), (h, kv), (h, h), (h, mlp), (h, mlp), (mlp, h)]


def matmul_rate(torch, rows: int, dims, dtype, seconds: float) -> float:
    """GFLOP/s of one layer's products at ``rows`` rows, repeated for ``seconds``."""
    gen = torch.Generator().manual_seed(0)
    pairs = [(torch.randn(rows, k, generator=gen).to(dtype), torch.randn(k, n, generator=gen).to(dtype)) for k, n in dims]
    flops = sum(2 * rows * k * n for k, n in dims)
    for a, b in pairs:
        a @ b
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for a, b in pairs:
            a @ b
        done += 1
    return flops * done / (time.perf_counter() - start) / 1e9


def attention_rate(torch, rows: int, config, dtype, seconds: float) -> float:
    """GFLOP/s of torch's scaled_dot_product_attention over one segment (all heads, ``rows``
    positions): the part of a layer that is not a matrix product of weights."""
    import torch.nn.functional as F

    heads = config.num_attention_heads
    dim = config.hidden_size // heads
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, heads, rows, dim, generator=gen).to(dtype) for _ in range(3))
    flops = 2 * 2 * heads * rows * rows * dim
    F.scaled_dot_product_attention(q, k, v)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        F.scaled_dot_product_attention(q, k, v)
        done += 1
    return flops * done / (time.perf_counter() - start) / 1e9


def stream_rate(torch, model, tokens: int, chunk: int, vocab: int) -> float:
    gen = torch.Generator().manual_seed(0)

    def chunks():
        done = 0
        while done < tokens:
            n = min(chunk, tokens - done)
            yield torch.randint(0, vocab, (1, n), generator=gen)
            done += n

    with torch.inference_mode():
        start = time.perf_counter()
        state = model.stream(chunks())
        seconds = time.perf_counter() - start
    assert state.n_tokens == tokens
    return tokens / seconds


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--segment", type=int, default=512)
    ap.add_argument("--mem", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=16384, help="tokens per stream (after a warm-up of 2 segments)")
    ap.add_argument("--chunk", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=3.0, help="matmul timing per precision per round")
    ap.add_argument("--precisions", default="float32,bfloat16")
    ap.add_argument("--out", default=None, help="directory for results.json (new, empty or written by this bench "
                    "before; never a directory of yours)")
    ap.add_argument("--overwrite", action="store_true", help="write into an --out this bench did not write")
    args = ap.parse_args(argv)
    precisions = [p for p in args.precisions.split(",") if p]
    for p in precisions:
        if p not in ("float32", "bfloat16"):
            ap.exit(2, f"error: --precisions takes float32 and/or bfloat16, got {p!r}\n")
    for name in ("segment", "tokens", "chunk", "threads", "rounds"):
        if getattr(args, name) < 1:
            ap.exit(2, f"error: --{name} must be >= 1, got {getattr(args, name)}\n")
    out = bench_out_or_exit(ap, args.out, "stream_rate", args.overwrite)

    import torch

    from rmt import RMTConfig, RecurrentMemoryTransformer, runs
    from rmt.threads import set_threads
    from rmt.training.trainer import native_bf16

    set_threads(args.threads)
    base = runs.load_causal_lm(runs.locate(args.model).where, torch.float32)
    config = base.config
    fp32 = RecurrentMemoryTransformer.wrap(base, RMTConfig(num_mem_tokens=args.mem, segment_size=args.segment)).eval()
    models = {"float32": fp32}
    if "bfloat16" in precisions:
        models["bfloat16"] = copy.deepcopy(fp32).to(torch.bfloat16)
    vocab = fp32.adapter.vocab_size
    rows, dims = args.segment + 2 * args.mem, shapes(config)
    per_token = flop_per_token(config, args.segment, args.mem)
    for p in precisions:  # warm-up: kernels chosen, memory allocated
        stream_rate(torch, models[p], 2 * args.segment, args.chunk, vocab)
    load_before = os.getloadavg()
    rates = {p: {"matmul_gflops": [], "attention_gflops": [], "tokens_per_s": []} for p in precisions}
    for r in range(args.rounds):
        for p in (precisions if r % 2 == 0 else precisions[::-1]):
            dtype = getattr(torch, p)
            rates[p]["matmul_gflops"].append(matmul_rate(torch, rows, dims, dtype, args.seconds))
            rates[p]["attention_gflops"].append(attention_rate(torch, rows, config, dtype, args.seconds / 2))
            rates[p]["tokens_per_s"].append(stream_rate(torch, models[p], args.tokens, args.chunk, vocab))
            print(f"round {r + 1}: {p}: matmul {rates[p]['matmul_gflops'][-1]:.1f} GFLOP/s, "
                  f"stream {rates[p]['tokens_per_s'][-1]:.1f} tokens/s", flush=True)
    result = {"bench": "stream_rate", "model": args.model, "segment": args.segment, "mem": args.mem,
              "tokens": args.tokens, "threads": torch.get_num_threads(), "rounds": args.rounds,
              "gflop_per_token": round(per_token / 1e9, 4), "native_bf16": native_bf16(cuda=False),
              "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
              if os.path.exists("/proc/cpuinfo") else "?",
              "load_average_before": round(load_before[0], 2), "load_average_after": round(os.getloadavg()[0], 2)}
    print(f"\n{args.model}, segments of {args.segment} + {args.mem} memory tokens, {per_token / 1e9:.3f} GFLOP/token, "
          f"{result['threads']} threads, load {result['load_average_before']} -> {result['load_average_after']}")
    print("| weights | matmul GFLOP/s | attention GFLOP/s | stream tokens/s | stream GFLOP/s | fraction of matmul "
          "| bound by the two rates | min per 1M tokens |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    attention_share = attention_flop_per_token(config, args.segment, args.mem) / per_token
    for p in precisions:
        matmul = statistics.median(rates[p]["matmul_gflops"])
        attention = statistics.median(rates[p]["attention_gflops"])
        tps = statistics.median(rates[p]["tokens_per_s"])
        # what the stream could reach if the weights' products ran at the matmul rate and attention at its own
        bound = 1 / ((1 - attention_share) + attention_share * matmul / attention)
        row = {"matmul_gflops": round(matmul, 1), "attention_gflops": round(attention, 1), "tokens_per_s": round(tps, 1),
               "stream_gflops": round(tps * per_token / 1e9, 1), "fraction": round(tps * per_token / 1e9 / matmul, 3),
               "fraction_bound": round(bound, 3), "minutes_per_1m": round(1e6 / tps / 60, 1), "all": rates[p]}
        result[p] = row
        print(f"| {p} | {row['matmul_gflops']} | {row['attention_gflops']} | {row['tokens_per_s']} | "
              f"{row['stream_gflops']} | {row['fraction']} | {row['fraction_bound']} | {row['minutes_per_1m']} |")
    result["attention_flop_share"] = round(attention_share, 3)
    print(f"attention is {attention_share:.0%} of the FLOPs; 'bound' is the fraction reachable with products at the "
          f"matmul rate and attention at torch's SDPA rate")
    if "float32" in result and "bfloat16" in result:
        result["bf16_over_fp32"] = round(result["bfloat16"]["tokens_per_s"] / result["float32"]["tokens_per_s"], 2)
    if out:
        start_bench_output(out, "stream_rate")
        (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
