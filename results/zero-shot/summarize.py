"""Write summary.json and the table of README.md from the results store of the zero-shot run.

    python results/zero-shot/summarize.py results/zero-shot/smollm2-135m.sqlite

Reads the store (read-only), prints the Markdown table, and writes summary.json beside this file:
per cell (task, length) the samples, correct answers, accuracy, a 95% Wilson interval, mean
prompt tokens (SmolLM2's, chat template included), mean seconds per sample, and the statuses.
"""

from __future__ import annotations

import json
import math
import sqlite3
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
LENGTHS = ["0k", "1k", "2k", "4k", "8k"]
TASKS = ["qa1", "qa2", "qa3", "qa4", "qa5"]


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if not n:
        return (0.0, 0.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return round(100 * max(0.0, centre - half), 1), round(100 * min(1.0, centre + half), 1)


def main(store: str) -> None:
    db = sqlite3.connect(f"file:{Path(store).resolve()}?mode=ro", uri=True)
    rows = db.execute("SELECT model, task, length, status, correct, n_tokens, seconds, prompt_set FROM results "
                      "WHERE model = 'smollm2-135m'").fetchall()
    cells: dict = defaultdict(lambda: {"n": 0, "correct": 0, "tokens": 0, "seconds": 0.0, "status": defaultdict(int)})
    prompt_sets = sorted({r[7] for r in rows})
    for _, task, length, status, correct, n_tokens, seconds, _ in rows:
        c = cells[(task, length)]
        c["status"][status] += 1
        if status != "over_window":
            c["n"] += 1
            c["correct"] += correct or 0
        c["tokens"] += n_tokens or 0
        c["seconds"] += seconds or 0.0
    summary = {"model": "smollm2-135m (SmolLM2-135M-Instruct)", "prompt_sets": prompt_sets, "cells": []}
    for task in TASKS:
        for length in LENGTHS:
            c = cells.get((task, length))
            if not c:
                continue
            total = sum(c["status"].values())
            summary["cells"].append({
                "task": task, "length": length, "samples": c["n"], "correct": c["correct"],
                "accuracy": round(100 * c["correct"] / c["n"], 1) if c["n"] else None,
                "wilson95": wilson(c["correct"], c["n"]), "mean_prompt_tokens": round(c["tokens"] / total),
                "mean_seconds": round(c["seconds"] / total, 2), "statuses": dict(c["status"])})
    (HERE / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")

    def label(task, length):
        c = cells.get((task, length))
        if not c or not c["n"]:
            return "-"
        mark = "\\*" if c["status"].get("truncated") else ""
        return f"{100 * c['correct'] / c['n']:.0f}{mark} ({c['n']})"

    lines = ["| task | " + " | ".join(LENGTHS) + " |", "|---|" + "---:|" * len(LENGTHS)]
    for task in TASKS:
        lines.append(f"| {task} | " + " | ".join(label(task, l) for l in LENGTHS) + " |")
    avg = []
    for length in LENGTHS:
        n = sum(cells[(t, length)]["n"] for t in TASKS if (t, length) in cells)
        k = sum(cells[(t, length)]["correct"] for t in TASKS if (t, length) in cells)
        avg.append(f"{100 * k / n:.0f} ({n})" if n else "-")
    lines.append("| **avg** | " + " | ".join(avg) + " |")
    lines.append("")
    lines.append("| length | " + " | ".join(LENGTHS) + " |")
    lines.append("|---|" + "---:|" * len(LENGTHS))
    for what, key in (("mean prompt tokens (SmolLM2, templated)", "tokens"), ("mean seconds per sample", "seconds")):
        values = []
        for length in LENGTHS:
            cs = [cells[(t, length)] for t in TASKS if (t, length) in cells]
            total = sum(sum(c["status"].values()) for c in cs)
            s = sum(c[key] for c in cs)
            values.append((f"{s / total:.0f}" if key == "tokens" else f"{s / total:.1f}") if total else "-")
        lines.append(f"| {what} | " + " | ".join(values) + " |")
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(HERE / "smollm2-135m.sqlite"))
