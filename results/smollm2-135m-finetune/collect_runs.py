"""Add runs to results/smollm2-135m-finetune/runs.json from their run dirs (train_config.json, metrics.jsonl) and
held-out results (heldout_eval.py --json). Replaces an entry of the same name. Not a test.

    python results/smollm2-135m-finetune/collect_runs.py NAME=RUN_DIR[,HELDOUT.json] --command NAME="rmt train ..." ...
"""

import argparse
import json
import statistics
from pathlib import Path

HERE = Path(__file__).parent


def entry(name: str, run: Path, heldout: Path | None, command: str | None) -> dict:
    cfg = json.loads((run / "train_config.json").read_text())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    train = [r for r in rows if r["type"] == "train"]
    evals = [{"step": r["step"], "segments": r["segments"], "accuracy": r["accuracy"], "samples": r["samples"]}
             for r in rows if r["type"] == "eval"]
    out = {
        "run": name, "task": cfg["task"], "kind": cfg["memory_kind"] if cfg["memory"] else "no-memory",
        "memory": cfg["memory"], "background": cfg["background"], "n_facts": cfg.get("n_facts"),
        "warmup_facts": cfg.get("warmup_facts"), "warmup_facts_steps": cfg.get("warmup_facts_steps", 0),
        "model": cfg["model"], "segment_size": cfg["segment_size"], "num_mem_tokens": cfg["num_mem_tokens"] if cfg["memory"] else 0,
        "memory_write": cfg.get("memory_write") if cfg["memory"] else None, "curriculum": cfg["curriculum"],
        "steps": max(r["step"] for r in train), "batch_size": cfg["batch_size"], "lr": cfg["lr"],
        "memory_lr": cfg.get("memory_lr"), "warmup_steps": cfg["warmup_steps"], "precision": cfg["mixed_precision"],
        "gradient_checkpointing": cfg.get("gradient_checkpointing"), "seed": cfg["seed"], "threads": cfg["threads"],
        "seconds_per_step_mean": round(statistics.mean(r["seconds_per_step"] for r in train if "seconds_per_step" in r), 2),
        "eval": evals, "command": command,
    }
    if heldout is not None:
        out["heldout"] = json.loads(heldout.read_text())
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", help="NAME=RUN_DIR[,HELDOUT.json]")
    ap.add_argument("--command", action="append", default=[], help='NAME="the command"')
    args = ap.parse_args()
    commands = dict(c.split("=", 1) for c in args.command)
    path = HERE / "runs.json"
    table = json.loads(path.read_text())
    for spec in args.runs:
        name, rest = spec.split("=", 1)
        run, _, heldout = rest.partition(",")
        new = entry(name, Path(run), Path(heldout) if heldout else None, commands.get(name))
        table = [e for e in table if e["run"] != name] + [new]
    path.write_text(json.dumps(table, indent=1) + "\n")
    print(f"{path}: {len(table)} runs")


if __name__ == "__main__":
    main()
