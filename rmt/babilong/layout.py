"""The public BABILong dataset layout, written and read: config = length, split = task.

``RMT-team/babilong`` on the Hugging Face Hub keeps one parquet file per length and task,
``{length}/{task}-00000-of-00001.parquet``, and a dataset card (``README.md``) whose YAML header lists
them as configs and splits. :func:`write_layout` writes the same, for any length (``1M`` and ``10M``
included), so ``datasets.load_dataset(folder, name="4k", split="qa1")`` and every tool that reads the
public sets read ours. :func:`read_layout` reads such a folder back (ours, or a local snapshot of the
public repo) without the ``datasets`` cache.

Rows keep every field of our records; the public columns (``input``, ``question``, ``target``) come
first. Records arrive grouped by (task, length) from the generator and are streamed to one parquet
writer per group, so a 10M-token set never has to fit in memory.
"""

from __future__ import annotations

import glob
import os
from collections import Counter
from pathlib import Path
from typing import Iterable

import yaml

from rmt.babilong.haystack import parse_length
from rmt.babilong.tasks import TASK_SPECS, TASKS
from rmt.errors import UsageError

CARD = "README.md"
# The card's pretty_name: how a rerun of `rmt generate` knows a layout folder is its own to replace.
WRITTEN_BY = "BABILong (generated with rmt)"
PUBLIC_COLUMNS = ("input", "question", "target")
BATCH_BYTES = 64 * 2**20  # text buffered per group before a parquet row group is written


def shard_name(length: str, task: str) -> str:
    """The public file name of one config/split (relative to the dataset folder)."""
    return f"{length}/{task}-00000-of-00001.parquet"


def is_layout(path: str | os.PathLike) -> bool:
    """A folder in the public layout: a dataset card with configs, or ``LENGTH/qaN-*.parquet`` files."""
    path = Path(path)
    return path.is_dir() and (bool(_card_configs(path)) or bool(_scan_shards(path)))


def _order_columns(row: dict) -> dict:
    return {**{k: row[k] for k in PUBLIC_COLUMNS if k in row}, **{k: v for k, v in row.items() if k not in PUBLIC_COLUMNS}}


def write_layout_into(records: Iterable[dict], folder: Path, card_details: dict | None = None) -> int:
    """Write ``records`` (each with ``task`` and ``length``) into the existing empty ``folder``;
    return how many. The caller makes it atomic (``rmt.atomic.atomic_dir``)."""
    import pyarrow as pa  # lazy: pyarrow ~0.4 s; only the parquet layout needs it
    import pyarrow.parquet as pq  # lazy: pyarrow ~0.4 s; only the parquet layout needs it

    writers: dict = {}
    buffers: dict = {}
    sizes: Counter = Counter()
    counts: Counter = Counter()
    nbytes: Counter = Counter()
    features: dict = {}

    def flush(key):
        rows = buffers.pop(key, [])
        if not rows:
            return
        if key not in writers:
            table = pa.Table.from_pylist(rows)
            file = folder / shard_name(*key)
            file.parent.mkdir(parents=True, exist_ok=True)
            writers[key] = pq.ParquetWriter(file, table.schema)
            features[key] = table.schema
        else:
            table = pa.Table.from_pylist(rows, schema=writers[key].schema)
        writers[key].write_table(table)
        nbytes[key] += table.nbytes
        sizes[key] = 0

    try:
        for record in records:
            for field in ("task", "length"):
                if field not in record:
                    raise UsageError(f"record lacks {field!r}; the public layout files records by length and task")
            key = (str(record["length"]), str(record["task"]))
            buffers.setdefault(key, []).append(_order_columns(record))
            counts[key] += 1
            sizes[key] += len(record.get("input", ""))
            if sizes[key] >= BATCH_BYTES:
                flush(key)
        for key in list(buffers):
            flush(key)
    finally:
        for writer in writers.values():
            writer.close()
    (folder / CARD).write_text(dataset_card(counts, nbytes, features, card_details or {}), encoding="utf-8")
    return sum(counts.values())


def _length_key(length: str):
    try:
        return (0, parse_length(length)[1])
    except ValueError:
        return (1, length)


def _task_key(task: str):
    return (TASKS.index(task), task) if task in TASKS else (len(TASKS), task)


def dataset_card(counts: Counter, nbytes: Counter, schemas: dict, details: dict) -> str:
    """The dataset card: YAML metadata (configs, dataset_info, language, ...) and a short body."""
    lengths = sorted({length for length, _ in counts}, key=_length_key)
    configs, info = [], []
    for length in lengths:
        tasks = sorted((t for l, t in counts if l == length), key=_task_key)
        configs.append({"config_name": length,
                        "data_files": [{"split": t, "path": f"{length}/{t}-*.parquet"} for t in tasks]})
        first = schemas[(length, tasks[0])]
        info.append({"config_name": length,
                     "features": [{"name": f.name, "dtype": _dtype(f.type)} for f in first],
                     "splits": [{"name": t, "num_bytes": nbytes[(length, t)], "num_examples": counts[(length, t)]}
                                for t in tasks]})
    total = sum(counts.values())
    meta = {
        "pretty_name": WRITTEN_BY,
        "language": ["en"],
        "license": "other",
        "task_categories": ["question-answering"],
        "tags": ["long-context", "babilong", "bAbI", "needle-in-a-haystack"],
        "size_categories": [_size_category(total)],
        "configs": configs,
        "dataset_info": info,
    }
    settings = "\n".join(f"- {k}: `{v}`" for k, v in details.items()) or "- (not recorded)"
    first_length, first_task = lengths[0], sorted((t for l, t in counts if l == lengths[0]), key=_task_key)[0]
    table = "\n".join(f"| {length} | " + ", ".join(f"{t} ({counts[(length, t)]})" for t in
                                                  sorted((t for l, t in counts if l == length), key=_task_key)) + " |"
                      for length in lengths)
    body = f"""
# BABILong, generated with rmt

bAbI facts hidden in background text, in the layout of the public `RMT-team/babilong` sets:
one config per length, one split per task, columns `input`, `question`, `target` (plus the
generator's metadata: token counts, seed, fact offsets).

```python
from datasets import load_dataset
ds = load_dataset("path/to/this/folder", name="{first_length}", split="{first_task}")
```

| config (length) | splits (task, samples) |
|---|---|
{table}

Generation settings:
{settings}

Licence: facts from the rmt world simulator (Apache-2.0) or the bAbI files (CC BY 3.0);
background text as licensed by its source (Project Gutenberg books are public domain).
"""
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n" + body


def _dtype(arrow_type) -> str | dict:
    import pyarrow as pa

    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return {"list": _dtype(arrow_type.value_type)}
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "string"
    if pa.types.is_null(arrow_type):
        return "null"
    return str(arrow_type)


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "n>1M"


# ------------------------------------------------------------------------------------- reading
def _card_meta(folder: Path) -> dict:
    """The YAML header of the folder's dataset card (empty when there is none, or it does not parse)."""
    card = folder / CARD
    if not card.is_file():
        return {}

    try:
        text = card.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    if not text.startswith("---"):
        return {}
    try:
        meta = yaml.safe_load(text.split("---", 2)[1]) or {}
    except yaml.YAMLError:
        return {}
    return meta if isinstance(meta, dict) else {}


def _card_configs(folder: Path) -> dict:
    """{length: {task: [files]}} from the card's ``configs`` (empty when there is no such card)."""
    meta = _card_meta(folder)
    found: dict = {}
    for config in meta.get("configs") or []:
        splits = found.setdefault(str(config.get("config_name")), {})
        for entry in config.get("data_files") or []:
            paths = entry.get("path")
            paths = [paths] if isinstance(paths, str) else list(paths or [])
            files = sorted(f for p in paths for f in glob.glob(str(folder / p)))
            splits[str(entry.get("split"))] = files
    return found


def _scan_shards(folder: Path) -> dict:
    """{length: {task: [files]}} from ``LENGTH/TASK-*.parquet`` or ``TASK/LENGTH-*.parquet`` names."""
    found: dict = {}
    for file in sorted(folder.glob("*/*.parquet")):
        outer, inner = file.parent.name, file.name.split("-")[0].removesuffix(".parquet")
        if inner in TASK_SPECS:
            length, task = outer, inner
        elif outer in TASK_SPECS:
            length, task = inner, outer
        else:
            continue
        try:
            parse_length(length)
        except ValueError:
            continue
        found.setdefault(length, {}).setdefault(task, []).append(str(file))
    return found


def is_rmt_layout(path: str | os.PathLike) -> bool:
    """A layout folder that rmt wrote and nothing was added to: its card names rmt
    (``WRITTEN_BY``) and every file in it is the card or the shard of a config and split the card
    lists, under the name rmt gives it. Replacing such a folder loses nothing of the user's;
    anything else in it makes it the user's."""
    folder = Path(path)
    if _card_meta(folder).get("pretty_name") != WRITTEN_BY:
        return False
    ours = {folder / CARD} | {folder / shard_name(length, task)
                              for length, splits in _card_configs(folder).items() for task in splits}
    for entry in folder.rglob("*"):
        if entry.is_dir() and not entry.is_symlink():
            continue
        if entry not in ours:
            return False
    return True


def layout_cells(path: str | os.PathLike) -> dict:
    """{length: {task: [parquet files]}} of a folder in the public layout."""
    folder = Path(path)
    return _card_configs(folder) or _scan_shards(folder)


def read_layout(path: str | os.PathLike, tasks: Iterable[str] | None = None,
                lengths: Iterable[str] | None = None) -> list[dict]:
    """Records of a public-layout folder (only the asked tasks/lengths when given). Rows that lack
    our metadata get ``task`` (the split) and ``length`` (the config) and a ``sample`` index."""
    import pyarrow.parquet as pq

    cells = layout_cells(path)
    if not cells:
        raise UsageError(f"{path} is not a dataset in the public BABILong layout (no {CARD} with configs and no "
                         "LENGTH/TASK-*.parquet files)")
    want_tasks = set(tasks) if tasks is not None else None
    want_lengths = {str(x) for x in lengths} if lengths is not None else None
    records: list[dict] = []
    for length in sorted(cells, key=_length_key):
        if want_lengths is not None and length not in want_lengths:
            continue
        for task in sorted(cells[length], key=_task_key):
            if want_tasks is not None and task not in want_tasks:
                continue
            files = cells[length][task]
            if not files:
                continue
            rows = pq.read_table(files).to_pylist()
            for i, row in enumerate(rows):
                row.setdefault("task", task)
                row.setdefault("length", length)
                row.setdefault("sample", i)
                records.append(row)
    return records
