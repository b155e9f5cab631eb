"""The bAbI text format: parse it, read the task files, fetch them online.

A story is a run of numbered lines; numbering restarts at 1 with every new story. A fact line is
``ID text``; a question line is ``ID question<TAB>answer<TAB>supporting ids``. Each question becomes
one sample holding every fact of its story up to that question (earlier questions dropped), with
its supporting facts given as indices into that fact list.
"""

from __future__ import annotations

import os
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from rmt.babilong.tasks import TASK_FILES, check_task
from rmt.errors import UsageError

BABI_URL = "http://www.thespermwhale.com/jaseweston/babi/tasks_1-20_v1-2.tar.gz"
SPLITS = ("train", "test")


@dataclass
class BabiSample:
    facts: list[str]  # the story's facts up to the question, in order
    question: str
    answer: str
    supporting: list[int] = field(default_factory=list)  # indices into ``facts``, as in the file

    def to_dict(self) -> dict:
        return {"facts": self.facts, "question": self.question, "answer": self.answer,
                "supporting": self.supporting}


def parse_babi(text: str, source: str = "<text>") -> list[BabiSample]:
    """Parse bAbI-format text into one sample per question line."""
    samples: list[BabiSample] = []
    facts: list[str] = []
    line_to_fact: dict[int, int] = {}  # story line id -> index in ``facts``
    previous_id = 0
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        head, _, rest = line.partition(" ")
        if not head.isdigit():
            raise UsageError(f"{source}:{lineno}: expected a line number, got {raw[:40]!r}")
        line_id = int(head)
        if line_id <= previous_id:  # numbering restarted: a new story
            facts, line_to_fact = [], {}
        previous_id = line_id
        if "\t" in rest:
            parts = rest.split("\t")
            if len(parts) < 3:
                raise UsageError(f"{source}:{lineno}: a question line needs question<TAB>answer<TAB>ids")
            question, answer, ids = parts[0].strip(), parts[1].strip(), parts[2].split()
            try:
                supporting = [line_to_fact[int(i)] for i in ids]
            except (KeyError, ValueError):
                raise UsageError(f"{source}:{lineno}: supporting ids {parts[2]!r} name no earlier fact") from None
            samples.append(BabiSample(list(facts), question, answer, supporting))
        else:
            line_to_fact[line_id] = len(facts)
            facts.append(rest.strip())
    return samples


def task_file(babi_dir: str | os.PathLike, task: str, split: str = "test") -> Path:
    task = check_task(task)
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    path = Path(babi_dir) / f"{TASK_FILES[task]}_{split}.txt"
    if not path.is_file():
        raise UsageError(f"bAbI file not found: {path}")
    return path


def load_babi(task: str, split: str = "test", babi_dir: str | os.PathLike | None = None) -> list[BabiSample]:
    """Samples of one bAbI task from the task files in ``babi_dir`` (default: fetched online once)."""
    if babi_dir is None:
        babi_dir = download_babi()
    path = task_file(babi_dir, task, split)
    return parse_babi(path.read_text(encoding="utf-8"), source=str(path))


def default_cache_dir() -> Path:
    return Path(os.environ.get("RMT_CACHE_DIR", Path.home() / ".cache" / "rmt"))


def download_babi(cache_dir: str | os.PathLike | None = None, lang: str = "en") -> Path:
    """Fetch bAbI v1.2 (Facebook, CC BY 3.0) once into the cache; return the ``en``/``en-10k`` dir.

    Users only: the tests never call this (they read ``../shared/data/babi``).
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "babi"
    target = root / "tasks_1-20_v1-2" / lang
    if target.is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        archive = Path(tmp) / "babi.tar.gz"
        urllib.request.urlretrieve(BABI_URL, archive)  # noqa: S310 (fixed https/http URL)
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        os.replace(Path(tmp) / "tasks_1-20_v1-2", root / "tasks_1-20_v1-2")  # atomic: all or nothing
    return target
