"""`rmt quickstart`: the RMT length-generalisation claim, small enough for a laptop CPU.

The task is **fact detection** (arXiv 2304.11062, section 4, "detect"), written in bAbI's words:
one qa1 fact ("Mary went to the kitchen.") hidden at a random place in background text, and the
question about it at the end ("Where is Mary?"). Detecting the fact and keeping it in memory
through every later segment is the whole task; binding several people to rooms (bAbI's real qa1)
is not part of it (see docs/training.md for that).

1. trains a word-level tokenizer on generated qa1 text (no downloads, no data files);
2. trains a small GPT-2 with recurrent memory (RMT with gated writes, docs/memory.md) on inputs of
   1 to 4 segments, curriculum 1 -> 2 -> 4;
3. trains the same-size model without memory on the same batches, with full attention over the
   longest training input (its window);
4. evaluates both at 1, 2, 4, ..., 256 segments (64x the training length). The model without memory
   reads the last window of each longer input (truncated on the left, as LLM evaluations do), so
   it is at chance whenever the fact lies before its window. Writes a PNG of accuracy vs length
   and returns the numbers (the CLI prints them as one JSON line).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from rmt import runs
from rmt.atomic import atomic_file
from rmt.errors import UsageError
from rmt.training.config import TrainConfig
from rmt.training.trainer import Trainer, build_tokenizer, check_output_dir, evaluate, model_window

# The preset (docs/training.md, "How the quickstart was tuned"): stories of one qa1 fact, and RMT
# whose memory is written through 0/1 gates trained to stay shut (memory_write="gated"): a segment
# of background opens no gate, so the memory that holds the fact is carried bit for bit through
# any number of segments. With the papers' replace rule (or RMT-R) the same model, data and steps
# held 1.00 at the training lengths but fell towards chance by 64 segments, differently on every seed.
GATED_RMT = dict(memory_kind="rmt", memory_write="gated", write_gate_bias=1.0, write_sparsity=0.05)
PRESET = dict(
    task="qa1",
    n_facts=[1, 1],
    segment_size=32,
    num_mem_tokens=8,
    **GATED_RMT,
    n_layer=2,
    n_embd=64,
    n_head=4,
    curriculum=[1, 2, 4],
    stage_steps=450,
    vary_n_segments=True,
    batch_size=32,
    lr=3e-3,
    warmup_steps=50,
    scheduler="cosine",
    eval_every=150,
    eval_samples=100,
    save_every=150,
    log_every=10,
)
EVAL_LENGTHS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)  # segments; up to --max-eval-segments
CHANCE = 1 / 6  # six rooms

# `rmt quickstart --base NAME`: a pretrained causal LM (e.g. smollm2-135m) fine-tuned with memory on
# bAbI's real qa1 (2-10 facts about several people, hidden in background text) on inputs of 1-2
# segments of 64 tokens, then evaluated to 16x that. Its own tokenizer; precision "auto": bf16
# autocast where bf16 is native (2.28x an fp32 step on a CPU with AVX512-BF16), fp32 elsewhere (an
# AVX2-only CPU ran bf16 products at 0.03x fp32: bench/matmul_precision.py); the papers' learning rate. The same settings without memory make the baseline,
# which reads inputs up to the base model's own window in full (the last window beyond).
BASE_PRESET = dict(
    task="qa1",
    segment_size=64,
    num_mem_tokens=8,
    **GATED_RMT,  # the write rule that held the fact from scratch
    curriculum=[1, 2],
    stage_steps=40,
    vary_n_segments=True,
    batch_size=8,
    lr=1e-4,
    warmup_steps=10,
    scheduler="constant",
    mixed_precision="auto",
    eval_every=40,
    eval_samples=40,
    eval_batch_size=8,
    save_every=40,
    log_every=5,
)
BASE_MAX_EVAL_FACTOR = 16  # evaluated to 16x the longest training input


def quickstart_config(output_dir, steps: int | None = None, seed: int = 0, threads: int = 1,
                      progress: bool = True, eval_samples: int = 100, base: str | None = None) -> TrainConfig:
    preset = dict(PRESET) if base is None else dict(BASE_PRESET, model=base)
    if steps is not None:
        preset["stage_steps"] = steps
        preset["eval_every"] = min(preset["eval_every"], steps)
        preset["save_every"] = min(preset["save_every"], steps)
    preset["eval_samples"] = min(preset["eval_samples"], eval_samples)
    return TrainConfig.from_dict(dict(output_dir=str(Path(output_dir) / "rmt"), seed=seed, threads=threads, progress=progress,
                                      **preset))  # the flat form: the memory settings beside the training ones


def plot_accuracy(path: Path, lengths: list[int], rmt: dict, baseline: dict, train_segments: int, segment_size: int,
                  window_segments: int, title: str = "fact detection (one qa1 fact in background text)") -> Path:
    """Accuracy vs input length for both models, written atomically (temp file, then rename)."""
    import matplotlib  # lazy: matplotlib ~0.5 s; only the plot needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.plot(lengths, [rmt[str(n)] for n in lengths], "o-", label="RMT, gated writes (memory)")
    ax.plot(lengths, [baseline[str(n)] for n in lengths], "s--", label="no memory (reads its last window)")
    ax.axvspan(0.8, train_segments, color="grey", alpha=0.15, label="training lengths")
    if window_segments <= lengths[-1]:
        ax.axvline(window_segments, color="tab:orange", lw=0.8, ls="-.")
        ax.text(window_segments * 1.05, 0.03, "no-memory window", color="tab:orange", fontsize=8)
    ax.axhline(CHANCE, color="red", lw=0.8, ls=":", label="chance (1/6)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(lengths, [str(n) for n in lengths])
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(f"input length (segments of {segment_size} tokens)")
    ax.set_ylabel("accuracy")
    ax.legend(loc="center left", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    atomic_file(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    return path


def run_quickstart(output_dir=None, steps: int | None = None, eval_samples: int = 100, max_eval_segments: int | None = None,
                   threads: int = 1, seed: int = 0, progress: bool = True, log=print, base: str | None = None) -> dict:
    """The from-scratch fact-detection run, or with ``base`` (a model name ``rmt.models`` resolves, e.g.
    ``smollm2-135m``) that pretrained model fine-tuned with memory on multi-fact qa1 (``BASE_PRESET``).
    ``max_eval_segments``: default 256 from scratch, 16x the training length with a base."""
    start = time.time()
    if eval_samples < 1:
        raise UsageError(f"eval_samples must be >= 1, got {eval_samples}")
    if max_eval_segments is None:
        max_eval_segments = 256 if base is None else BASE_MAX_EVAL_FACTOR * max(BASE_PRESET["curriculum"])
    if not 1 <= max_eval_segments <= EVAL_LENGTHS[-1]:
        raise UsageError(f"max_eval_segments must be in 1..{EVAL_LENGTHS[-1]}, got {max_eval_segments}")
    out = Path(output_dir) if output_dir else Path("runs") / "quickstart" / time.strftime("%Y%m%d-%H%M%S")
    held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if held:  # its rmt/, baseline/ and plot would go beside what is there
        shown = ", ".join(held[:3]) + (", ..." if len(held) > 3 else "")
        raise UsageError(f"--output-dir {out} is not empty (it holds {shown}); "
                         f"give a new or empty directory (nothing is overwritten)")
    check_output_dir(out)
    torch.set_num_threads(threads)
    cfg = quickstart_config(out, steps, seed, threads, progress, eval_samples, base)
    base_cfg = dataclasses.replace(cfg, memory=False, output_dir=str(out / "baseline"))

    if base is None:
        task = "detect (one qa1 fact)"
        log("task: fact detection - one qa1 fact hidden in background text, the question at the end")
        log("[1/4] word-level tokenizer on generated qa1 text (offline)")
        tokenizer = build_tokenizer(cfg)
        log(f"      vocabulary: {len(tokenizer)} tokens")
        shape = f"{cfg.n_layer} layers x {cfg.n_embd}"
    else:
        task = "qa1"
        log(f"task: bAbI qa1 - stories of 2-10 facts about several people hidden in background text, fine-tuning {base}")
        log(f"[1/4] {base}: its own tokenizer (fetched and converted on first use)")
        tokenizer = build_tokenizer(cfg)
        shape = base
    log(f"[2/4] RMT ({cfg.rmt.memory_write} writes): {shape}, {cfg.rmt.num_mem_tokens} memory tokens, "
        f"segments of {cfg.rmt.segment_size} tokens, curriculum {cfg.curriculum} x {cfg.stage_steps} steps")
    rmt_trainer = Trainer(cfg, tokenizer=tokenizer)
    rmt_summary = rmt_trainer.train()
    window_tokens = cfg.max_segments * cfg.rmt.segment_size if base is None else model_window(
        rmt_trainer.accelerator.unwrap_model(rmt_trainer.model).base_model)
    log(f"[3/4] baseline without memory: same {'size' if base is None else 'model'}, full attention over "
        f"{window_tokens} tokens, same steps and batches")
    base_trainer = Trainer(base_cfg, tokenizer=tokenizer)
    base_summary = base_trainer.train()

    lengths = [n for n in EVAL_LENGTHS if n <= max_eval_segments]
    log(f"[4/4] evaluating at {lengths} segments, {eval_samples} samples each (the baseline reads the last "
        f"{window_tokens} tokens of longer inputs)")
    rmt_model = rmt_trainer.accelerator.unwrap_model(rmt_trainer.model)
    base_model = base_trainer.accelerator.unwrap_model(base_trainer.model)
    window = model_window(base_model)
    results = {"rmt": {}, "baseline": {}}
    jobs = [(name, n) for n in lengths for name in ("rmt", "baseline")]
    bar = tqdm(jobs, desc="evaluate", unit="length", disable=not progress, dynamic_ncols=True)
    for name, n in bar:
        bar.set_postfix(model=name, segments=n)
        model = rmt_model if name == "rmt" else base_model
        r = evaluate(model, rmt_trainer.data, n, eval_samples, cfg.eval_batch_size, None if name == "rmt" else window)
        results[name][str(n)] = round(r["accuracy"], 4)
    bar.close()

    png = plot_accuracy(out / "accuracy_vs_length.png", lengths, results["rmt"], results["baseline"],
                        cfg.max_segments, cfg.rmt.segment_size, window // cfg.rmt.segment_size,
                        **({} if base is None else {"title": f"bAbI qa1 in background text, {base}"}))
    log("")
    log(f"{'fact detection' if base is None else 'qa1'} accuracy by input length (chance = 1/6 = 0.17; trained on "
        f"<= {cfg.max_segments} segments):")
    log(f"{'segments':>9} {'tokens':>7} {'RMT':>6} {'no memory':>10}")
    for n in lengths:
        note = "" if n * cfg.rmt.segment_size <= window else "  (no memory: last window only)"
        log(f"{n:>9} {n * cfg.rmt.segment_size:>7} {results['rmt'][str(n)]:>6.2f} {results['baseline'][str(n)]:>10.2f}{note}")
    log("")
    log(f"RMT checkpoint:      {rmt_summary['final']}  (RecurrentMemoryTransformer.from_pretrained + AutoTokenizer)")
    log(f"baseline checkpoint: {base_summary['final']}")
    log(f"plot:                {png}")
    log(f"metrics:             {out / 'rmt' / runs.METRICS_FILE}, {out / 'baseline' / runs.METRICS_FILE}")
    return {"task": task, "base": base, "seed": seed, "train_segments": cfg.max_segments,
            "segment_size": cfg.rmt.segment_size, "baseline_window_segments": window // cfg.rmt.segment_size,
            "rmt": results["rmt"], "baseline": results["baseline"], "seconds": round(time.time() - start, 1)}
