"""Reports from one or many results stores: accuracy tables (terminal, Markdown) and a heatmap PNG
in the style of the BABILong figures (rows tasks, columns lengths, cell = accuracy %, red→green),
one panel per model, the models (RAG baselines included) side by side.

Stores are read without changing them, each file once, and combined sample by sample (see
``combine``). Names and text from a store are escaped for where they are shown (the terminal,
Markdown, the heatmap's labels), so a name cannot break a table or send escape codes to a
terminal. An existing ``--markdown`` or ``--png`` file is replaced only when ``rmt report`` wrote it.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from rmt.atomic import atomic_file
from rmt.errors import UsageError
from rmt.evaluation.store import Result, read_results, unique_stores
from rmt.outputs import check_output, check_replaceable

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


# ------------------------------------------------------------------------------ escaping
def printable(text) -> str:
    """``text`` safe to print: control and format characters (escape codes, newlines, bidi
    overrides) are shown as Python writes them (``\\x1b``, ``\\n``, ``\\u202e``)."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


# Markdown punctuation that can make or break structure (tables, emphasis, links, code, HTML,
# math); "_" only where it can start or end emphasis (not inside a word, as in qa1_rmt).
_MARKDOWN_SPECIAL = re.compile(r"[\\`*\[\]<>|$~&]|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")


def markdown_text(text) -> str:
    """``text`` as literal Markdown inline text (one line, usable in a table cell or heading)."""
    return _MARKDOWN_SPECIAL.sub(lambda m: "\\" + m.group(0), printable(text))


def plot_text(text) -> str:
    """``text`` as a literal matplotlib label (a "$" would start mathtext)."""
    return printable(text).replace("$", r"\$")


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
            raise UsageError(f"model(s) {', '.join(map(printable, unknown))} not in the results; "
                             f"available: {', '.join(map(printable, seen_models))}")
        seen_models = list(models)
    tasks = sorted({t for (_, t, _) in cells}, key=task_value)
    lengths = sorted({l for (_, _, l) in cells}, key=length_value)
    return Table(dict(cells), seen_models, tasks, lengths, mode, {m: sorted(v) for m, v in prompt_sets.items()})


def _answer(r: Result) -> tuple:
    return (r.status, r.output, r.correct, r.correct_strict)


def combine(stores: list[tuple[Path, list[Result]]]) -> list[Result]:
    """The results of several stores as one set of samples. A sample is a model's answer to one
    prompt: (model, task, length, sample id, prompt hash). Found in several stores with the same
    answer (a copy, a merged store) it counts once; with different answers (two runs under one
    model name) the stores contradict each other and are refused, since pooling them would count
    each question twice. The same sample id with another prompt (another seed's data) is another
    sample, so the stores of ``rmt reproduce``'s seeds pool into a mean over seeds."""
    first: dict = {}
    combined: list[Result] = []
    conflicts: list[tuple] = []
    for path, results in stores:
        for r in results:
            key = (r.model, r.task, r.length, r.sample_id, r.prompt_hash)
            if key not in first:
                first[key] = (path, r)
                combined.append(r)
            elif _answer(first[key][1]) != _answer(r):
                conflicts.append((first[key][0], path, r))
    if conflicts:
        a, b, r = conflicts[0]
        raise UsageError(f"{a} and {b} answer the same question differently ({len(conflicts)} answer(s), e.g. "
                         f"model {printable(r.model)}, {printable(r.task)} at {printable(r.length)}, sample "
                         f"{printable(r.sample_id)}): pooling them would count each question twice; report them "
                         f"separately, or give each run its own model name (rmt eval --name)")
    return combined


def load_table(stores: Iterable[str | Path], mode: str = "official", models: list[str] | None = None) -> Table:
    stores = unique_stores(stores)  # the same file named twice is read once
    if not stores:
        raise UsageError("no results store given")
    results = combine([(path, read_results([path])) for path in stores])
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
        rows = [[printable(v) for v in row] for row in [header] + _rows(table, model)]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = [f"{printable(model)}  (accuracy %, {table.mode} scoring, prompts: {printable(table.prompts_of(model))})"]
        for n, row in enumerate(rows):
            lines.append("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths))))
            if n == 0:
                lines.append("  ".join("-" * w for w in widths))
        blocks.append("\n".join(lines))
    if table.any_truncated:
        blocks.append(TRUNCATED_NOTE)
    return "\n\n".join(blocks)


# How every report starts: what tells a Markdown file rmt report wrote (and may replace) from a user's.
MARKDOWN_HEAD = "# BABILong results\n\nAccuracy (%), "


def format_markdown(table: Table) -> str:
    note = f" `{TRUNCATED_MARK}`: {TRUNCATED_NOTE[len(TRUNCATED_MARK) + 2:]}." if table.any_truncated else ""
    parts = [f"{MARKDOWN_HEAD}{table.mode} scoring. `OW`: input longer than the model's "
             f"context window (not answered). `-`: not evaluated.{note}\n"]
    lengths = [markdown_text(l) for l in table.lengths]
    for model in table.models:
        parts.append(f"## {markdown_text(model)}\n")
        parts.append(f"Prompts: {markdown_text(table.prompts_of(model))}.\n")
        parts.append("| task | " + " | ".join(lengths) + " |")
        parts.append("|---|" + "---:|" * len(lengths))
        for n, row in enumerate(_rows(table, model)):
            name = "**avg**" if n == len(table.tasks) else markdown_text(row[0])
            parts.append("| " + " | ".join([name] + [markdown_text(v) for v in row[1:]]) + " |")
        parts.append("")
    if len(table.models) > 1:
        parts.append("## Side by side (average over tasks)\n")
        parts.append("| model | " + " | ".join(lengths) + " |")
        parts.append("|---|" + "---:|" * len(lengths))
        for model in table.models:
            parts.append("| " + " | ".join([markdown_text(model)] + [markdown_text(table.average(model, l).label())
                                                                      for l in table.lengths]) + " |")
        parts.append("")
    return "\n".join(parts)


def is_report_markdown(path: Path) -> bool:
    """Whether ``path`` is a Markdown report that rmt report wrote (it starts the way every one does)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(MARKDOWN_HEAD.encode())) == MARKDOWN_HEAD.encode()
    except OSError:
        return False


def check_markdown_output(path: str | Path, flag: str = "markdown path", overwrite: bool = False) -> Path:
    """The output rule (``rmt.outputs``) for a Markdown report; an existing file is replaced only
    when rmt report wrote it, or with ``overwrite``. Creates nothing."""
    path = check_output(path, flag, suffixes=MARKDOWN_SUFFIXES)
    check_replaceable(path, flag, is_report_markdown, overwrite)
    return path


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



# A text chunk in every heatmap: what tells a PNG rmt report wrote (and may replace) from a user's.
PNG_MARK = ("Software", "rmt report")


def is_report_png(path: Path) -> bool:
    """Whether ``path`` is a heatmap that rmt report wrote (its PNG text chunk says so)."""
    try:
        from PIL import Image  # lazy: Pillow (matplotlib's) only where a PNG is checked

        with Image.open(path) as image:  # reads the chunks before the pixels, decodes nothing
            return image.format == "PNG" and image.info.get(PNG_MARK[0]) == PNG_MARK[1]
    except Exception:  # not an image, not readable, no Pillow: not ours
        return False


def check_png_output(path: str | Path, flag: str = "heatmap path", overwrite: bool = False) -> Path:
    """The output rule (``rmt.outputs``) for a heatmap; an existing file is replaced only when rmt
    report wrote it, or with ``overwrite``. Creates nothing."""
    path = check_output(path, flag, suffixes=PNG_SUFFIXES)
    check_replaceable(path, flag, is_report_png, overwrite)
    return path


def save_heatmap(table: Table, path: str | Path, dpi: int = 150, flag: str = "heatmap path",
                 overwrite: bool = False) -> Path:
    path = check_png_output(path, flag, overwrite)
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
        ax.set_xticks(range(len(table.lengths)), [plot_text(l) for l in table.lengths])
        ax.set_yticks(range(len(table.tasks)), [plot_text(t) for t in table.tasks])
        ax.set_xlabel("context length")
        title = printable(model)
        ax.set_title(plot_text(title if len(title) <= 40 else "…" + title[-39:]), fontsize=9)
        ax.tick_params(length=0)
    fig.colorbar(image, ax=list(axes[0]), fraction=0.05, pad=0.01, label="accuracy, %")
    atomic_file(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png", metadata=dict([PNG_MARK])))
    plt.close(fig)
    return path


def write_markdown(table: Table, path: str | Path, flag: str = "markdown path", overwrite: bool = False) -> Path:
    path = check_markdown_output(path, flag, overwrite)
    text = format_markdown(table)
    atomic_file(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return path
