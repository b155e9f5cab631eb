"""CPU threads: wall time of `rmt train`, `rmt quickstart`, `rmt eval` and `rmt demo` with one torch
thread vs torch's own default (one per core), side by side in one run, each as a fresh process.

    python bench/threads.py                  # ~5 min on 2 shared cores
    python bench/threads.py --rounds 1 --jobs train,eval

Why: torch starts one thread per core. The models these commands build by default are small (a
2-layer GPT-2 of width 64-128, segments of 32 tokens), so each matrix product is too small to split
well, and on a machine whose cores are busy with other work the threads wait for each other at
every operation. Each job runs the same command with `--threads 1` and with `--threads N` (N = the
core count, what torch picks by itself), alternating, `--rounds` times; the fastest run of each
is kept (on a shared machine the least disturbed one). Ends with one JSON line: per job the
seconds per variant and the ratio default/one (above 1: one thread is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def tiny_hf_model(path: Path) -> None:
    """A small GPT-2 (2 layers x 128) + a word-level tokenizer, saved like a hub model, for `rmt eval`."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from rmt.babilong import generate
    from rmt.training.tokenizer import train_word_tokenizer

    tok = train_word_tokenizer([r["input"] + " " + r["question"] for r in generate("qa1", "4k", 4)], 5000)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=4096, n_embd=128, n_layer=2, n_head=4,
                                       eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    model.save_pretrained(path)
    tok.save_pretrained(path)


def jobs(work: Path) -> dict:
    """name -> function(run_dir) -> argv (without --threads)."""
    model = work / "model"
    return {
        "train": lambda d: ["train", "--output-dir", str(d / "run"), "--curriculum", "1,2", "--stage-steps", "25",
                            "--eval-every", "1000", "--save-every", "1000", "--no-progress"],
        "quickstart": lambda d: ["quickstart", "--output-dir", str(d / "qs"), "--steps", "15", "--eval-samples", "20",
                                 "--max-eval-segments", "8", "--no-progress"],
        "eval": lambda d: ["eval", str(model), "--lengths", "2k", "--samples", "8", "--batch-size", "4",
                           "--max-new-tokens", "4", "--store", str(d / "r.sqlite"), "--no-progress"],
        "demo": lambda d: ["demo", "--tokens", "200000", "--chunk", "8192"],
    }


def run(argv: list[str], threads: int) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "rmt", *argv, "--threads", str(threads)], env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{proc.stderr[-2000:]}")
    return seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", default="train,quickstart,eval,demo")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1
    variants = sorted({1, cores})
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tiny_hf_model(work / "model")
        table = jobs(work)
        names = [j.strip() for j in args.jobs.split(",") if j.strip()]
        for name in names:
            if name not in table:
                raise SystemExit(f"unknown job {name!r}; allowed: {', '.join(table)}")
            times = {v: [] for v in variants}
            for round_ in range(args.rounds):
                order = variants if round_ % 2 == 0 else variants[::-1]
                for threads in order:
                    with tempfile.TemporaryDirectory(dir=work) as run_dir:
                        times[threads].append(run(table[name](Path(run_dir)), threads))
                        print(f"{name:<10} threads={threads}: {times[threads][-1]:6.1f} s", flush=True)
            best = {v: min(t) for v, t in times.items()}
            results[name] = {"seconds": {str(v): round(s, 2) for v, s in best.items()},
                             "default_over_one": round(best[cores] / best[1], 2)}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(json.dumps({"bench": "threads", "cores": cores, "load_avg_1min_at_end": load, "rounds": args.rounds,
                      "results": results}))


if __name__ == "__main__":
    main()
