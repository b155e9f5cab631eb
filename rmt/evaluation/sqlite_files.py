"""rmt's SQLite files (the results store, the endpoint response cache): read without changing a
byte of them, and recognised as rmt's own before anything is written to them.

A reader (``rmt report``, the checks before ``rmt eval`` writes) opens a file with SQLite's
``mode=ro``: no journal switch, no schema change, no row. It works on a read-only mount too.
"""

from __future__ import annotations

import sqlite3
import urllib.request
from pathlib import Path

from rmt.errors import UsageError


def connect_read_only(path: str | Path) -> sqlite3.Connection:
    """A connection to the existing SQLite file ``path`` that cannot write to it.

    With no ``-wal`` (or rollback ``-journal``) file beside it, every committed row is in the file
    itself and no writer is connected (a WAL writer keeps its ``-wal`` while it is open), so it is
    read as ``immutable``: a plain ``mode=ro`` reader of a WAL database creates ``-wal`` and
    ``-shm`` files beside it and leaves them there, and fails outright in a read-only directory.
    With a ``-wal`` file (a run in progress, or killed) ``mode=ro`` reads the answers it holds."""
    path = Path(path).resolve()
    uri = "file:" + urllib.request.pathname2url(str(path)) + "?mode=ro"
    if not any(path.with_name(path.name + suffix).exists() for suffix in ("-wal", "-journal")):
        uri += "&immutable=1"
    return sqlite3.connect(uri, uri=True)


def file_state(path: str | Path) -> tuple | None:
    """What changes when a writer opens, checkpoints or closes the SQLite file ``path`` (an
    ``immutable`` read is only right if this stayed the same while it read); None if missing."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size, path.with_name(path.name + "-wal").exists()


def table_columns(path: str | Path) -> dict[str, set[str]]:
    """Table name -> column names of the SQLite file ``path``, read without writing to it; a file
    that is not SQLite raises ``sqlite3.DatabaseError``."""
    db = connect_read_only(path)
    try:
        names = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {name: {row[1] for row in db.execute("SELECT * FROM pragma_table_info(?)", (name,))}
                for name in names}
    finally:
        db.close()


def check_own_file(path: str | Path, flag: str | None, required: dict[str, set[str]], what: str) -> None:
    """Refuse (ValueError, one line) an existing non-empty file at ``path`` that is not one of rmt's
    SQLite files of this kind: not SQLite at all, or an SQLite database without the tables (and
    their columns) in ``required``, such as another program's. A new or empty file, or an empty
    database, passes. ``flag`` (``--store``) starts the message when given; ``what`` names the
    kind (``results store``). Nothing is written."""
    path, named = Path(path).expanduser(), f"{flag} " if flag else ""
    what = ("an " if what[0] in "aeiou" else "a ") + what
    if not path.is_file() or path.stat().st_size == 0:
        return
    try:
        tables = table_columns(path)
    except sqlite3.DatabaseError as exc:
        raise UsageError(f"{named}{path} is not {what} (SQLite said: {exc}); nothing was written to it; "
                         f"give a new file") from None
    if tables and any(not columns <= tables.get(name, set()) for name, columns in required.items()):
        shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        raise UsageError(f"{named}{path} is an SQLite database but not {what} (its tables: {shown}); "
                         f"nothing was written to it; give a new file")
