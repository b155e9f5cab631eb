"""Copy a campaign run's newest checkpoint - the trained tensors and what loads them, not the
optimizer - and its metrics into this folder, and redraw the learning curve.

    python results/pretrained-memory/snapshot.py /work/runs/campaign-detect results/pretrained-memory/detect

The destination is a model dir every command loads (`rmt eval results/pretrained-memory/detect`,
`rmt train --model results/pretrained-memory/detect ...` to continue on a new machine: the
optimizer then restarts, give it a short --warmup-steps). It holds `adapter_model.safetensors`
(LoRA + the memory's parameters), `rmt_config.json` (memory settings, the base's name and weights
fingerprint), the base's `config.json` and tokenizer, `train_config.json`, `trainer_state.json`
(the step), `metrics.jsonl` (the run's whole log) and `curve.png`: validation accuracy by step at the
training length (the trainer's evaluations) and, from `curve.jsonl` (length_eval.py), at longer
lengths split by where the supporting fact lies.
"""

import json
import shutil
import sys
from pathlib import Path

from rmt import runs
from rmt.atomic import atomic_file
from rmt.training.checkpoint import resumable_checkpoint

MODEL_FILES = (runs.ADAPTER_WEIGHTS_FILE, runs.RMT_CONFIG_FILE, runs.BASE_CONFIG_FILE, runs.TRAIN_CONFIG_FILE,
               runs.TRAINER_STATE_FILE, "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
               "chat_template.jinja")


def plot(dest: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in (dest / runs.METRICS_FILE).read_text().splitlines() if line.strip()]
    evals = [r for r in rows if r["type"] == "eval"]
    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    by_segments: dict = {}
    for r in evals:
        by_segments.setdefault(r["segments"], []).append((r["step"], r["accuracy"]))
    for segments, points in sorted(by_segments.items()):
        ax.plot(*zip(*points), marker="o", label=f"trainer eval, {segments} segments (all facts)")
    curve = dest / "curve.jsonl"
    if curve.is_file():
        lines = [json.loads(line) for line in curve.read_text().splitlines() if line.strip()]
        for segments in sorted({r["segments"] for r in lines}):
            points = sorted((r["step"], r["accuracy_earlier"]) for r in lines if r["segments"] == segments and r["accuracy_earlier"] is not None)
            if points:
                ax.plot(*zip(*points), marker="s", linestyle="--", label=f"{segments} segments, fact before the last segment")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"{dest.name}: smollm2-135m + LoRA + memory")
    atomic_file(dest / "curve.png", lambda tmp: fig.savefig(tmp, dpi=110, format="png"))


def main():
    run, dest = Path(sys.argv[1]), Path(sys.argv[2])
    checkpoint = resumable_checkpoint(run)
    if checkpoint is None:
        raise SystemExit(f"{run} has no checkpoint yet")
    dest.mkdir(parents=True, exist_ok=True)
    copies = [(checkpoint / name, dest / name) for name in MODEL_FILES if (checkpoint / name).is_file()]
    for source, target in copies + [(run / runs.METRICS_FILE, dest / runs.METRICS_FILE)]:
        atomic_file(target, lambda tmp, source=source: shutil.copyfile(source, tmp))  # a reader never sees half a file
    plot(dest)
    print(f"{dest}: step {json.loads((checkpoint / runs.TRAINER_STATE_FILE).read_text())['step']} from {checkpoint}")


if __name__ == "__main__":
    main()
