"""Save and load records: JSONL, parquet, a folder in the public dataset layout (``hub``, see
``rmt.babilong.layout``) or an HF ``datasets`` save_to_disk directory; always atomic.

Everything is first written to a temporary sibling of the destination and renamed into place, so
an error (or Ctrl-C) never leaves a half-written file or directory behind.

A long generation is also resumable (``RecordsWriter``): records stream into a hidden partial
JSONL file beside the output, flushed one record at a time, with the settings that produce them in
a second hidden file. A run killed half way leaves the partial; a rerun with the same settings
keeps its complete records and generates only the rest, a rerun with other settings discards it.
What the settings name is also recorded as resolved (the tokenizer's name and vocabulary hash, the
background's fingerprint): a rerun of the same settings that resolves to another tokenizer or
background is refused (``ResumeMismatch``) rather than mixing the two in one output.
The partial becomes the output once complete: renamed (JSONL), converted to parquet or a datasets
dir, or streamed into the public layout (one parquet writer per length and task). An uninterrupted
run takes the same path, so a resumed output is byte for byte the uninterrupted one in every format.

An existing output is replaced only when it is records written here (a JSONL file or parquet file
of records, a datasets dir holding our marker file, a public-layout folder holding our dataset card
and nothing else), or when the caller says ``overwrite``: a user's own files are never deleted.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Iterator

from rmt.atomic import atomic_dir, atomic_file, sweep_leftovers
from rmt.babilong.layout import is_layout, is_rmt_layout, read_layout, write_layout_into
from rmt.errors import UsageError
from rmt.outputs import check_output

FORMATS = ("jsonl", "parquet", "hub", "hf")
SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet", "": "hub"}
DIR_FORMATS = ("hub", "hf")
MARKER = "rmt_records.json"  # in every datasets dir written here: how a rerun knows the dir is ours
RECORD_KEYS = ("input", "question", "target")


def infer_format(path: str | os.PathLike, fmt: str | None = None) -> str:
    """``fmt`` when given (checked), else from the suffix: .jsonl/.json, .parquet, none (a folder in
    the public layout)."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise UsageError(f"unknown output format {fmt!r}; allowed: {', '.join(FORMATS)}")
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise UsageError(f"cannot tell the format of {path} from its suffix {suffix!r}; allowed: .jsonl, .json, "
                         ".parquet, or no suffix (a folder in the public layout); or give the format "
                         f"(--format {'|'.join(FORMATS)})")
    return SUFFIXES[suffix]


def _first_line(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.readline()  # a whole record: several MB at 1M tokens, read once


def is_records_output(path: str | os.PathLike) -> bool:
    """Whether replacing ``path`` loses nothing of the user's: it does not exist, is empty, or
    holds records written here."""
    path = Path(path)
    if not path.exists():
        return True
    if path.is_dir():
        return (path / MARKER).is_file() or not any(path.iterdir()) or is_rmt_layout(path)
    if path.stat().st_size == 0:
        return True
    if path.suffix.lower() == ".parquet":
        try:
            import pyarrow.parquet as pq  # lazy: pyarrow ~0.4 s; only parquet needs it

            return set(RECORD_KEYS) <= set(pq.read_schema(path).names)
        except Exception:
            return False
    try:
        first = json.loads(_first_line(path).decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(first, dict) and set(RECORD_KEYS) <= set(first)


def check_records_output(path: str | os.PathLike, fmt: str | None = None, overwrite: bool = False,
                         flag: str = "--out") -> tuple[Path, str]:
    """The output rule (``rmt.outputs``) for records, plus: the format is known, and an existing
    output that is not records written here is kept unless ``overwrite``. Returns (path, format)."""
    if fmt is not None:
        infer_format(path, fmt)  # a known format
    kind = "dir" if (fmt or SUFFIXES.get(Path(path).suffix.lower())) in DIR_FORMATS else "file"
    path = check_output(path, flag, kind=kind, suffixes=None if fmt is not None else tuple(SUFFIXES))
    fmt = fmt or infer_format(path)
    if not overwrite and not is_records_output(path):
        what = "a directory" if path.is_dir() else "a file"
        raise UsageError(f"{flag} {path} is {what} that rmt did not write (nothing is replaced); "
                         f"choose a new name, or pass --overwrite to replace it")
    return path, fmt


def _write_final(records: Iterable[dict], path: Path, fmt: str, settings: dict | None = None,
                 card: dict | None = None) -> int:
    """The parquet file, datasets dir or public-layout folder of ``records``, atomically; return
    how many. The layout streams (one parquet writer per length and task); the others hold the rows."""
    if fmt == "hub":
        return atomic_dir(path, lambda tmp: write_layout_into(records, tmp, card))
    import datasets  # lazy: datasets ~1 s; only the datasets format needs it

    dataset = datasets.Dataset.from_list(list(records))
    if fmt == "parquet":
        atomic_file(path, lambda tmp: dataset.to_parquet(tmp))
        return len(dataset)

    def write_dir(tmp: Path):
        dataset.save_to_disk(str(tmp))
        marker = {"written_by": "rmt", "records": len(dataset), "settings": settings}
        (tmp / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    atomic_dir(path, write_dir)
    return len(dataset)


def save_records(records: Iterable[dict], path: str | os.PathLike, fmt: str | None = None,
                 overwrite: bool = False, card: dict | None = None) -> int:
    """Write ``records`` to ``path``; return how many. JSONL and ``hub`` stream (records may be a
    generator); ``card``: generation settings for the ``hub`` layout's dataset card. An existing
    ``path`` that rmt did not write is kept unless ``overwrite`` (a UsageError)."""
    path, fmt = check_records_output(path, fmt, overwrite, flag="output")
    if fmt == "jsonl":

        def write_jsonl(tmp) -> int:
            n = 0
            with open(tmp, "w", encoding="utf-8") as f:
                for record in records:
                    f.write(json.dumps(record, ensure_ascii=False) + "\n")
                    n += 1
            return n

        return atomic_file(path, write_jsonl)
    return _write_final(records, path, fmt, card=card)


class ResumeMismatch(UsageError):
    """A partial output of the same settings was made with another tokenizer or background."""


class RecordsWriter:
    """Resumable writing of a long generation to ``path`` (see the module doc).

        writer = RecordsWriter(path, fmt, settings, resolved=...)  # settings: whatever determines the records
        records = iter_records(..., skip=writer.done)  # only the records not yet written
        n = writer.write(records)                      # total records in the output

    ``path`` must have passed ``check_records_output``. Only one writer per output at a time.
    ``card``: what the ``hub`` layout's dataset card says about the generation (same settings, same
    card: it is part of the bytes a resumed run must reproduce). ``resolved``: what the settings
    resolved to ({"tokenizer": {...}, "background": {...}}); a partial of the same settings but
    another ``resolved`` raises ``ResumeMismatch`` naming what differs, or with ``discard_mismatch``
    is discarded like a partial of other settings.
    """

    def __init__(self, path: str | os.PathLike, fmt: str, settings: dict, card: dict | None = None,
                 resolved: dict | None = None, discard_mismatch: bool = False):
        self.path, self.fmt, self.card = Path(path), fmt, card
        self.settings = json.loads(json.dumps(settings))  # as it reads back from the file
        self.resolved = json.loads(json.dumps(resolved or {}))
        self.partial = self.path.parent / f".{self.path.name}.partial"
        self.settings_file = self.path.parent / f".{self.path.name}.partial.json"
        self.discarded = False
        self.done = self._resume_point(discard_mismatch)

    def _resume_point(self, discard_mismatch: bool) -> int:
        """Complete records in a partial of the same settings (read only: bad input found after
        this must leave everything as it was; ``write`` does the cleaning up)."""
        saved = None
        if self.settings_file.is_file():
            try:
                saved = json.loads(self.settings_file.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError):
                saved = None
        saved = saved if isinstance(saved, dict) else {}
        same_settings = saved.get("settings") == self.settings
        if self.partial.is_file() and same_settings and saved.get("resolved") != self.resolved and not discard_mismatch:
            raise ResumeMismatch(self._mismatch(saved.get("resolved") or {}))
        if not self.partial.is_file() or not same_settings or saved.get("resolved") != self.resolved:
            self.discarded = self.partial.is_file()
            return 0
        lines, self._keep_bytes, offset = 0, 0, 0
        with open(self.partial, "rb") as f:
            while chunk := f.read(1 << 24):
                lines += chunk.count(b"\n")
                last = chunk.rfind(b"\n")
                if last >= 0:
                    self._keep_bytes = offset + last + 1
                offset += len(chunk)
        return lines

    def _mismatch(self, saved: dict) -> str:
        def say(value) -> str:
            if not isinstance(value, dict):
                return "nothing recorded"
            return f"{value.get('name')} (sha256 {str(value.get('sha256'))[:12]})"

        differ = [w for w in sorted(set(saved) | set(self.resolved)) if saved.get(w) != self.resolved.get(w)]
        details = "; ".join(f"{w}: {say(saved.get(w))} then, {say(self.resolved.get(w))} now" for w in differ)
        return (f"cannot resume the interrupted generation {self.partial}: the same settings now give another "
                f"{' and another '.join(differ)} ({details}) and one output must not mix them; restore what it "
                f"was made with, or pass --overwrite to discard it and start over")

    def write(self, records: Iterable[dict]) -> int:
        """Append ``records`` to the partial (one flush per record), then make it the output."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        n = self.done
        with open(self.partial, "a", encoding="utf-8") as f:
            _lock(f, self.path)
            sweep_leftovers(self.path)  # temp files of a run killed while renaming or converting
            if self.done:
                f.truncate(self._keep_bytes)  # a kill can cut the last record short
            else:
                f.truncate(0)  # a partial of other settings
                saved = {"settings": self.settings, "resolved": self.resolved}
                atomic_file(self.settings_file, lambda tmp: Path(tmp).write_text(json.dumps(saved) + "\n",
                                                                                  encoding="utf-8"))
            try:
                for record in records:
                    f.write(json.dumps(record, ensure_ascii=False) + "\n")
                    f.flush()  # a kill loses at most the record being written
                    n += 1
            except BaseException:
                if n == 0:  # nothing to resume from: leave nothing behind
                    self.partial.unlink(missing_ok=True)
                    self.settings_file.unlink(missing_ok=True)
                raise
        if self.fmt == "jsonl":
            os.replace(self.partial, self.path)
        else:
            _write_final((record for _, record in read_jsonl(self.partial)), self.path, self.fmt,
                         {**self.settings, "resolved": self.resolved} if self.resolved else self.settings, self.card)
            self.partial.unlink()
        self.settings_file.unlink(missing_ok=True)
        return n


def _lock(f, path: Path) -> None:
    """One writer per output: a second ``rmt generate`` to the same path fails instead of interleaving."""
    try:
        import fcntl  # lazy: POSIX only
    except ImportError:  # pragma: no cover - not POSIX
        return
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise UsageError(f"another process is writing {path} right now; wait for it or choose another output") from None


def read_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, object]]:
    """(line number, value) of every non-blank line; a line that is not UTF-8 or not JSON is one
    ValueError naming the file and the line."""
    path = Path(path)
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise UsageError(f"{path}, line {number}: not UTF-8 text (byte {raw[exc.start]:#04x} at column "
                                 f"{exc.start + 1})") from None
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                raise UsageError(f"{path}, line {number}: not valid JSON ({exc.msg} at column {exc.colno})") from None


def load_records(path: str | os.PathLike) -> list[dict]:
    """Read records written by ``save_records`` (JSONL file, parquet file, public-layout folder,
    datasets dir); a saved ``DatasetDict`` gives each row its split name as ``task``."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UsageError(f"records not found: {path}")
    if path.is_dir():
        if is_layout(path):
            return read_layout(path)
    fmt = "hf" if path.is_dir() else infer_format(path)
    if fmt == "jsonl":
        records = []
        for number, record in read_jsonl(path):
            if not isinstance(record, dict):
                raise UsageError(f"{path}, line {number}: a record must be a JSON object, got {type(record).__name__}")
            records.append(record)
        return records
    import datasets

    if fmt == "parquet":
        return datasets.Dataset.from_parquet(str(path)).to_list()
    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):  # e.g. a public config saved with save_to_disk: split = task
        return [{"task": split, **row} for split, part in loaded.items() for row in part.to_list()]
    return loaded.to_list()
