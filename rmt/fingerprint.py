"""What weights a local model was loaded from, as a content fingerprint.

A stored answer is reused only when the weights that made it are the same, so the results store
records this fingerprint with every answer. "Same path" is not enough: re-initialised or retrained
weights are often saved over the old ones.

The fingerprint of a model directory is ``sha256:`` + the sha256 of its ``{file name: sha256}``
table (every regular file at its top level: weights, config, tokenizer; hidden files left out).
Reading a 500 MB checkpoint on every run would cost seconds, so each file's sha256 is kept in
``$RMT_CACHE/fingerprints.json`` under its real path, size, mtime and inode, and recomputed only
when one of them changes (saving over a file changes its mtime; a rename changes its inode). A
conversion in rmt's model cache (registered names, ``.gguf`` files) already lists its files'
sha256 in its manifest, checked by ``rmt.models.resolve`` on every load: that table is used as it
is. A hub name is fingerprinted through its snapshot in the Hugging Face cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from rmt.atomic import atomic_file
from rmt.models import HF_CONFIG_FILE, MANIFEST_FILE, cache_root, file_sha256, manifest_files, models_dir

CACHE_FILE = "fingerprints.json"


def _cache_path() -> Path:

    return cache_root() / CACHE_FILE


def _load_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _save_cache(path: Path, cache: dict) -> None:
    """Best effort (the cache only saves time): atomic, and silent where the cache is not writable."""

    kept = {name: entry for name, entry in cache.items() if os.path.exists(name)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_file(path, lambda tmp: Path(tmp).write_text(json.dumps(kept, sort_keys=True) + "\n"))
    except OSError:
        pass


def files_sha256(paths: list[Path]) -> list[str]:
    """The sha256 of each file, from the cache where the file's real path, size, mtime and inode
    match; the others are read (and cached)."""
    cache_path = _cache_path()
    cache = _load_cache(cache_path)
    out, changed = [], False
    for path in paths:
        real = os.path.realpath(path)
        st = os.stat(real)
        stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
        entry = cache.get(real)
        if isinstance(entry, dict) and entry.get("stamp") == stamp and isinstance(entry.get("sha256"), str):
            out.append(entry["sha256"])
            continue
        digest = file_sha256(Path(real))
        cache[real] = {"stamp": stamp, "sha256": digest}
        changed = True
        out.append(digest)
    if changed:
        _save_cache(cache_path, cache)
    return out


def _table_digest(table: dict[str, str]) -> str:
    return "sha256:" + hashlib.sha256(json.dumps(table, sort_keys=True).encode()).hexdigest()


def directory_fingerprint(folder: str | os.PathLike) -> str:
    """``sha256:...`` of the files at the top level of ``folder`` (see the module docstring)."""

    folder = Path(folder)
    try:
        in_cache = folder.resolve().is_relative_to(models_dir().resolve())
    except OSError:
        in_cache = False
    table = manifest_files(folder) if in_cache else None
    if table is None:
        files = sorted(p for p in folder.iterdir()
                       if p.is_file() and not p.name.startswith(".") and p.name != MANIFEST_FILE)
        table = dict(zip((p.name for p in files), files_sha256(files)))
    return _table_digest(table)


def weights_fingerprint(name_or_path: str | os.PathLike) -> str | None:
    """The fingerprint of the model ``from_pretrained(name_or_path)`` loads: its directory's, or for
    a hub name its snapshot's in the Hugging Face cache; None when neither can be found."""
    path = Path(str(name_or_path)).expanduser()
    if path.is_dir():
        return directory_fingerprint(path)
    try:
        from huggingface_hub import try_to_load_from_cache

        config = try_to_load_from_cache(str(name_or_path), HF_CONFIG_FILE)
    except Exception:  # not a valid repo id: nothing to find
        return None
    return directory_fingerprint(Path(config).parent) if isinstance(config, str) else None
