"""Save and load records: JSONL, parquet, a folder in the public dataset layout (``hub``, see
``rmt.babilong.layout``) or an HF ``datasets`` save_to_disk directory; always atomic.

Everything is first written to a temporary sibling of the destination and renamed into place, so
an error (or Ctrl-C) never leaves a half-written file or directory behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Iterable

from rmt.atomic import atomic_dir, atomic_file

FORMATS = ("jsonl", "parquet", "hub", "hf")


def infer_format(path: str | os.PathLike, fmt: str | None = None) -> str:
    if fmt is not None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown output format {fmt!r}; allowed: {', '.join(FORMATS)}")
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".json"):
        return "jsonl"
    if suffix == ".parquet":
        return "parquet"
    return "hub"  # a directory in the public layout: config = length, split = task


def check_writable(path: str | os.PathLike) -> Path:
    """Fail early, with one line, when ``path`` cannot be written."""
    path = Path(path).expanduser()
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise FileNotFoundError(f"output dir does not exist: {parent} (for --out {path})")
    try:  # probe with a real file: os.access is always true for root and says nothing about odd filesystems
        fd, probe = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise PermissionError(f"output path not writable: {path} ({exc.strerror} in {parent})") from None
    if path.exists() and path.is_dir() and infer_format(path) not in ("hub", "hf"):
        raise ValueError(f"output path {path} is a directory; give a file name ending .jsonl or .parquet")
    return path


def save_records(records: Iterable[dict], path: str | os.PathLike, fmt: str | None = None,
                 card: dict | None = None) -> int:
    """Write ``records`` to ``path``; return how many. JSONL and ``hub`` stream (records may be a
    generator); ``card``: generation settings for the ``hub`` layout's dataset card."""
    path = check_writable(path)
    fmt = infer_format(path, fmt)
    if fmt == "hub":
        from rmt.babilong.layout import write_layout_into

        return atomic_dir(path, lambda tmp: write_layout_into(records, tmp, card))
    if fmt == "jsonl":

        def write_jsonl(tmp) -> int:
            n = 0
            with open(tmp, "w", encoding="utf-8") as f:
                for record in records:
                    f.write(json.dumps(record, ensure_ascii=False) + "\n")
                    n += 1
            return n

        return atomic_file(path, write_jsonl)
    import datasets

    rows = list(records)
    dataset = datasets.Dataset.from_list(rows)
    if fmt == "parquet":
        atomic_file(path, lambda tmp: dataset.to_parquet(tmp))
    else:
        atomic_dir(path, lambda tmp: dataset.save_to_disk(str(tmp)))
    return len(rows)


def load_records(path: str | os.PathLike) -> list[dict]:
    """Read records written by ``save_records`` (JSONL file, parquet file, public-layout folder,
    datasets dir); a saved ``DatasetDict`` gives each row its split name as ``task``."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"records not found: {path}")
    if path.is_dir():
        from rmt.babilong.layout import is_layout, read_layout

        if is_layout(path):
            return read_layout(path)
    fmt = "hf" if path.is_dir() else infer_format(path)
    if fmt == "jsonl":
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    import datasets

    if fmt == "parquet":
        return datasets.Dataset.from_parquet(str(path)).to_list()
    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):  # e.g. a public config saved with save_to_disk: split = task
        return [{"task": split, **row} for split, part in loaded.items() for row in part.to_list()]
    return loaded.to_list()
