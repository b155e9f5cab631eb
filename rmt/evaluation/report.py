"""Reports from one or many results stores: accuracy tables (terminal, Markdown) and a heatmap PNG
in the style of the BABILong figures (rows tasks, columns lengths, cell = accuracy %, red→green),
one panel per model, the models (RAG baselines included) side by side."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from rmt.atomic import atomic_file
from rmt.errors import UsageError
from rmt.evaluation.store import Result, read_results
from rmt.outputs import check_output

MARKDOWN_SUFFIXES = (".md", ".markdown")
PNG_SUFFIXES = (".png",)

OVER_WINDOW = "OW"
TRUNCATED_MARK = "*"  # some answers of the cell were made from the last window of a longer input
_UNITS = {"": 1, "k": 1000, "K": 1000, "m": 10**6, "M": 10**6}


def length_value(length: str) -> float:
    """Sort key of a length name ("0k", "4k", "1M", or a token count "3000")."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmM]?)", str(length).strip())
    return float(match.group(1)) * _UNITS[match.group(2)] if match else float("inf")


def task_value(task: str):
    match = re.fullmatch(r"qa(\d+)", task)
    return (int(match.group(1)), task) if match else (10**6, task)


@dataclass
class Cell:
    correct: int = 0
    scored: int = 0
    over_window: int = 0
    truncated: int = 0  # scored answers made from the input's last window (input longer than the window)

    @property
    def accuracy(self) -> float | None:
        return 100.0 * self.correct / self.scored if self.scored else None

    def label(self) -> str:
        if self.scored:
            return f"{self.accuracy:.0f}" + (TRUNCATED_MARK if self.truncated else "")
        return OVER_WINDOW if self.over_window else "-"


@dataclass
class Table:
    """Accuracy per model, task and length."""

    cells: dict  # (model, task, length) -> Cell
    models: list[str]
    tasks: list[str]
    lengths: list[str]
    mode: str = "official"
    prompt_sets: dict = None  # model -> sorted prompt sets of its results (from the store)

    def prompts_of(self, model: str) -> str:
        sets = (self.prompt_sets or {}).get(model) or []
        return ", ".join(sets) if sets else "not recorded"

    def cell(self, model: str, task: str, length: str) -> Cell:
        return self.cells.get((model, task, length), Cell())

    def average(self, model: str, length: str) -> Cell:
        """Pooled over tasks (every sample counts once)."""
        total = Cell()
        for task in self.tasks:
            c = self.cell(model, task, length)
            total.correct += c.correct
            total.scored += c.scored
            total.over_window += c.over_window
            total.truncated += c.truncated
        return total

    @property
    def any_truncated(self) -> bool:
        return any(c.truncated for c in self.cells.values())


def build_table(results: Iterable[Result], mode: str = "official", models: list[str] | None = None) -> Table:
    if mode not in ("official", "strict"):
        raise UsageError(f"unknown scoring mode {mode!r}; allowed: official, strict")
    cells: dict = defaultdict(Cell)
    seen_models: list[str] = []
    prompt_sets: dict = defaultdict(set)
    for r in results:
        if getattr(r, "prompt_set", None):
            prompt_sets[r.model].add(r.prompt_set)
        if r.model not in seen_models:
            seen_models.append(r.model)
        cell = cells[(r.model, r.task, r.length)]
        if r.status == "over_window":
            cell.over_window += 1
        else:
            cell.scored += 1
            cell.truncated += r.status == "truncated"
            cell.correct += int((r.correct if mode == "official" else r.correct_strict) or 0)
    if models:
        unknown = [m for m in models if m not in seen_models]
        if unknown:
            raise UsageError(f"model(s) {', '.join(unknown)} not in the results; available: {', '.join(seen_models)}")
        seen_models = list(models)
    tasks = sorted({t for (_, t, _) in cells}, key=task_value)
    lengths = sorted({l for (_, _, l) in cells}, key=length_value)
    return Table(dict(cells), seen_models, tasks, lengths, mode, {m: sorted(v) for m, v in prompt_sets.items()})


def load_table(stores: Iterable[str | Path], mode: str = "official", models: list[str] | None = None) -> Table:
    stores = list(stores)
    if not stores:
        raise UsageError("no results store given")
    results = read_results(stores)
    if not results:
        raise UsageError(f"no results in {', '.join(map(str, stores))}")
    return build_table(results, mode, models)


# ---------------------------------------------------------------------------------- tables
def _rows(table: Table, model: str) -> list[list[str]]:
    rows = [[task] + [table.cell(model, task, l).label() for l in table.lengths] for task in table.tasks]
    if len(table.tasks) > 1:
        rows.append(["avg"] + [table.average(model, l).label() for l in table.lengths])
    return rows


TRUNCATED_NOTE = (f"{TRUNCATED_MARK}: answered from the last window: the input was longer than the model's context "
                  "window, so its haystack was cut from the left to fit (instruction, question and chat template kept)")


def format_terminal(table: Table) -> str:
    """Plain aligned text: one block per model (accuracy %, OW = over the model's window)."""
    blocks = []
    for model in table.models:
        header = ["task"] + table.lengths
        rows = [header] + _rows(table, model)
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = [f"{model}  (accuracy %, {table.mode} scoring, prompts: {table.prompts_of(model)})"]
        for n, row in enumerate(rows):
            lines.append("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths))))
            if n == 0:
                lines.append("  ".join("-" * w for w in widths))
        blocks.append("\n".join(lines))
    if table.any_truncated:
        blocks.append(TRUNCATED_NOTE)
    return "\n\n".join(blocks)


def _md(label: str) -> str:
    return label.replace(TRUNCATED_MARK, "\\" + TRUNCATED_MARK)


def format_markdown(table: Table) -> str:
    note = f" `{TRUNCATED_MARK}`: {TRUNCATED_NOTE[len(TRUNCATED_MARK) + 2:]}." if table.any_truncated else ""
    parts = [f"# BABILong results\n\nAccuracy (%), {table.mode} scoring. `OW`: input longer than the model's "
             f"context window (not answered). `-`: not evaluated.{note}\n"]
    for model in table.models:
        parts.append(f"## {model}\n")
        parts.append(f"Prompts: {table.prompts_of(model)}.\n")
        parts.append("| task | " + " | ".join(table.lengths) + " |")
        parts.append("|---|" + "---:|" * len(table.lengths))
        for row in _rows(table, model):
            name = f"**{row[0]}**" if row[0] == "avg" else row[0]
            parts.append("| " + " | ".join([name] + [_md(v) for v in row[1:]]) + " |")
        parts.append("")
    if len(table.models) > 1:
        parts.append("## Side by side (average over tasks)\n")
        parts.append("| model | " + " | ".join(table.lengths) + " |")
        parts.append("|---|" + "---:|" * len(table.lengths))
        for model in table.models:
            parts.append("| " + " | ".join([model] + [_md(table.average(model, l).label()) for l in table.lengths]) + " |")
        parts.append("")
    return "\n".join(parts)


# --------------------------------------------------------------------------------- heatmap
PANEL_BASE_W, CELL_W, CELL_H, BASE_H = 1.4, 0.62, 0.42, 1.5  # inches


def heatmap_figsize(n_models: int, n_tasks: int, n_lengths: int) -> tuple[float, float]:
    """Figure size in inches: a deterministic function of the table's shape (tests check the PNG)."""
    width = n_models * (PANEL_BASE_W + CELL_W * n_lengths) + 0.9  # + colour bar
    height = BASE_H + CELL_H * n_tasks
    return round(width, 2), round(height, 2)


def heatmap_pixels(table: Table, dpi: int = 150) -> tuple[int, int]:
    w, h = heatmap_figsize(len(table.models), len(table.tasks), len(table.lengths))
    return int(w * dpi), int(h * dpi)  # matplotlib's Agg canvas truncates the same way



def save_heatmap(table: Table, path: str | Path, dpi: int = 150, flag: str = "heatmap path") -> Path:
    path = check_output(path, flag, suffixes=PNG_SUFFIXES)
    import matplotlib  # lazy: matplotlib ~0.5 s; only the heatmap needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import LinearSegmentedColormap

    # The BABILong figures' palette: red (0%) through yellow to green (100%).
    cmap = LinearSegmentedColormap.from_list("babilong", ["#d73027", "#fee08b", "#1a9850"]).with_extremes(bad="#d9d9d9")
    figsize = heatmap_figsize(len(table.models), len(table.tasks), len(table.lengths))
    fig, axes = plt.subplots(1, len(table.models), figsize=figsize, dpi=dpi, squeeze=False, layout="constrained")
    image = None
    for ax, model in zip(axes[0], table.models):
        values = np.full((len(table.tasks), len(table.lengths)), np.nan)
        for i, task in enumerate(table.tasks):
            for j, length in enumerate(table.lengths):
                cell = table.cell(model, task, length)
                if cell.accuracy is not None:
                    values[i, j] = cell.accuracy
                ax.text(j, i, cell.label(), ha="center", va="center", fontsize=9,
                        color="black" if cell.accuracy is None or 25 <= cell.accuracy <= 85 else "white")
        image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0, vmax=100, aspect="auto")
        ax.set_xticks(range(len(table.lengths)), table.lengths)
        ax.set_yticks(range(len(table.tasks)), table.tasks)
        ax.set_xlabel("context length")
        ax.set_title(model if len(model) <= 40 else "…" + model[-39:], fontsize=9)
        ax.tick_params(length=0)
    fig.colorbar(image, ax=list(axes[0]), fraction=0.05, pad=0.01, label="accuracy, %")
    atomic_file(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
    plt.close(fig)
    return path


def write_markdown(table: Table, path: str | Path, flag: str = "markdown path") -> Path:
    path = check_output(path, flag, suffixes=MARKDOWN_SUFFIXES)
    text = format_markdown(table)
    atomic_file(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return path
