"""The results store: one SQLite file per evaluation run (or shared by many).

Every answer is one row, committed as soon as it is scored, in WAL mode, so a ``kill -9`` loses at
most the answer being computed, and a rerun skips every cell that is already done with the same
prompt by the same producer (the weights' fingerprint and the decoding settings, recorded with
every answer: ``producer``). The file records
the benchmark version it was written for; opening it with another version is a clear error instead
of a silently mixed report.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from rmt.errors import UsageError
from rmt.evaluation.sqlite_files import check_own_file, connect_read_only, file_state
from rmt.outputs import check_output

# Bump SCHEMA_VERSION when the table layout changes, BENCHMARK_VERSION when the meaning of a score
# changes (prompt defaults, scoring rule, haystack construction): results are then not comparable.
SCHEMA_VERSION = "1"
BENCHMARK_VERSION = "babilong-rmt-1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    model          TEXT NOT NULL,
    task           TEXT NOT NULL,
    length         TEXT NOT NULL,
    sample_id      TEXT NOT NULL,
    prompt_hash    TEXT NOT NULL,
    status         TEXT NOT NULL,      -- 'ok' | 'truncated' (answered from the input's last window) | 'over_window'
    output         TEXT,               -- raw model output (NULL when over window)
    target         TEXT,
    correct        INTEGER,            -- official scoring rule, 1/0 (NULL when over window)
    correct_strict INTEGER,            -- strict (whole-word) rule
    n_tokens       INTEGER,            -- prompt tokens as the model counts them (whole input), when known
    seconds        REAL,
    created        REAL NOT NULL,
    prompt_set     TEXT,               -- which prompts: builtin, lm-eval, file:NAME, plain (+ parts off),
                                       -- then ", chat template" / ", no chat template" for a model with one
    producer       TEXT,               -- what made the answer besides the prompt, canonical JSON:
                                       -- {"weights": fingerprint, "decoding": {...}}; NULL: written
                                       -- by an rmt that did not record it (never reused)
    PRIMARY KEY (model, task, length, sample_id)
);
"""


def prompt_hash(prompt) -> str:
    """A short stable hash of what the model was asked (a string or chat messages)."""
    text = prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Result:
    model: str
    task: str
    length: str
    sample_id: str
    prompt_hash: str
    status: str
    output: str | None
    target: str | None
    correct: int | None
    correct_strict: int | None
    n_tokens: int | None = None
    seconds: float | None = None
    created: float = 0.0
    prompt_set: str | None = None
    producer: str | None = None


def producer_key(identity: dict) -> str:
    """The canonical JSON of a runner's identity (``Runner.identity()``), as the store keeps it."""
    return json.dumps(identity, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


class StaleResultsError(UsageError):
    """The store holds answers for the asked cells that another producer made (other weights or
    decoding settings, or not recorded): they are neither reused nor replaced."""


class StoreVersionError(UsageError):
    """The store was written for another benchmark or schema version."""


# What makes an SQLite file a results store (another program's database is never written to).
STORE_TABLES = {"meta": {"key", "value"}, "results": {"model", "task", "length", "sample_id", "prompt_hash", "status"}}


def check_store_path(path: str | Path, flag: str = "results store", write: bool = True) -> Path:
    """A results store can be opened at ``path`` without touching anything that is not one: a new
    file in a writable place, or an existing results store (an SQLite file of other tables, or any
    other file, is refused before anything is written to it)."""
    path = Path(path)
    # a flag (--store) names the path in the message; the default wording already says what it is
    check_own_file(path, flag if flag.startswith("-") else None, STORE_TABLES, "results store")
    return check_output(path, flag, kind="file") if write else path


def unique_stores(paths: Iterable[str | Path]) -> list[Path]:
    """``paths`` in order, each file once: the same store named twice (or through a link) is read once."""
    seen, unique = set(), []
    for path in map(Path, paths):
        real = path.resolve()
        if real not in seen:
            seen.add(real)
            unique.append(path)
    return unique


class ResultsStore:
    """SQLite results store. Use as a context manager or call :meth:`close`."""

    def __init__(self, path: str | Path, benchmark_version: str = BENCHMARK_VERSION, create: bool = True,
                 read_only: bool = False):
        """``create``: make the file when it is missing; ``read_only``: open an existing store
        without changing a byte of it (``rmt report``; works on a read-only mount), writes fail."""
        self.path = Path(path)
        self.read_only = read_only
        if (read_only or not create) and not self.path.is_file():
            raise UsageError(f"results store not found: {self.path}")
        if self.path.is_dir():
            raise UsageError(f"results store path is a directory, expected a .sqlite file: {self.path}")
        check_store_path(self.path, write=create and not read_only)
        if read_only:
            self._open_read_only(benchmark_version)
            return
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable across process crashes (kill -9) in WAL mode; FULL also covers power loss.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(results)")}
            if "prompt_set" not in columns:  # a store from before prompt sets were recorded
                self._db.execute("ALTER TABLE results ADD COLUMN prompt_set TEXT")
            if "producer" not in columns:  # from before producers were recorded: its rows stay NULL
                self._db.execute("ALTER TABLE results ADD COLUMN producer TEXT")
        except sqlite3.DatabaseError as exc:
            raise UsageError(f"not a results store (SQLite said: {exc}): {self.path}") from None
        self._check_versions(benchmark_version)

    def _open_read_only(self, benchmark_version: str) -> None:
        try:
            self._db = connect_read_only(self.path)
            tables = {name for (name,) in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as exc:
            raise UsageError(f"not a results store (SQLite said: {exc}): {self.path}") from None
        try:
            if not set(STORE_TABLES) <= tables:
                raise UsageError(f"not a results store (no results table): {self.path}")
            self._check_versions(benchmark_version)
        except BaseException:
            self._db.close()
            raise

    def _check_versions(self, benchmark_version: str) -> None:
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        if not meta and self.read_only:
            raise StoreVersionError(f"results store {self.path} records no schema or benchmark version (its first "
                                    "run stopped before writing them); rerun rmt eval on it, or use a new store file")
        if not meta:
            with self._transaction():
                self._db.executemany(
                    "INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)",
                    [("schema_version", SCHEMA_VERSION), ("benchmark_version", benchmark_version),
                     ("created", str(time.time()))],
                )
            meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("schema_version") != SCHEMA_VERSION:
            raise StoreVersionError(
                f"results store {self.path} has schema version {meta.get('schema_version')!r}, "
                f"this rmt reads {SCHEMA_VERSION!r}; use a new store file"
            )
        if meta.get("benchmark_version") != benchmark_version:
            raise StoreVersionError(
                f"results store {self.path} was written for benchmark version "
                f"{meta.get('benchmark_version')!r}, this run is {benchmark_version!r}; "
                "scores are not comparable, use a new store file"
            )
        self.benchmark_version = benchmark_version

    def _transaction(self):
        db = self._db

        class _Tx:
            def __enter__(self_inner):
                db.execute("BEGIN IMMEDIATE")

            def __exit__(self_inner, exc_type, exc, tb):
                db.execute("COMMIT" if exc_type is None else "ROLLBACK")
                return False

        return _Tx()

    # -- writing ---------------------------------------------------------------------------------
    def put(self, result: Result) -> None:
        """Insert or replace one answer and commit it immediately (one transaction per answer)."""
        row = result.__dict__ | {"created": result.created or time.time()}
        with self._transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO results (model, task, length, sample_id, prompt_hash, status, output,"
                " target, correct, correct_strict, n_tokens, seconds, created, prompt_set, producer) VALUES (:model,"
                " :task, :length, :sample_id, :prompt_hash, :status, :output, :target, :correct, :correct_strict,"
                " :n_tokens, :seconds, :created, :prompt_set, :producer)",
                row,
            )

    # -- reading ---------------------------------------------------------------------------------
    def done(self, model: str) -> dict[tuple[str, str, str], str]:
        """(task, length, sample_id) -> prompt hash of every stored answer of ``model``."""
        rows = self._db.execute(
            "SELECT task, length, sample_id, prompt_hash FROM results WHERE model = ?", (model,)
        )
        return {(t, l, s): h for t, l, s, h in rows}

    def stored(self, model: str) -> dict[tuple[str, str, str], Result]:
        """(task, length, sample_id) -> the stored answer of ``model``."""
        return {(r.task, r.length, r.sample_id): r for r in self.results(model)}

    def results(self, model: str | None = None) -> Iterator[Result]:
        sql = "SELECT * FROM results" + (" WHERE model = ?" if model else "") + " ORDER BY model, task, length, sample_id"
        cursor = self._db.execute(sql, (model,) if model else ())
        names = [d[0] for d in cursor.description]
        for row in cursor:
            yield Result(**dict(zip(names, row)))

    def models(self) -> list[str]:
        return [m for (m,) in self._db.execute("SELECT DISTINCT model FROM results ORDER BY model")]

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0]

    def close(self) -> None:
        self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_results(paths: Iterable[str | Path], benchmark_version: str = BENCHMARK_VERSION) -> list[Result]:
    """All results of one or many stores, each read once and left unchanged (each must exist and
    match the version)."""
    results: list[Result] = []
    for path in unique_stores(paths):
        for _ in range(3):  # read again if a writer started (or finished) during the read
            before = file_state(path)
            with ResultsStore(path, benchmark_version=benchmark_version, read_only=True) as store:
                rows = list(store.results())
            if file_state(path) == before:
                break
        results.extend(rows)
    return results
