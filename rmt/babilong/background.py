"""Background text: the hay the facts are hidden in.

Three sources, one interface (``sentences(rng)``: an endless stream of sentences):

* ``BooksDir(path)``: plain-text books (e.g. Project Gutenberg). Headers/footers are cut at the
  ``*** START OF`` / ``*** END OF`` lines, ``-8`` files are decoded as Latin-1, CRLF normalised.
* ``PG19()``: the PG19 books through ``datasets`` streaming (online users; not used by tests).
* ``FallbackText()``: prose generated on the fly from a small built-in grammar, so a fresh machine
  needs no data at all. It is a *fallback*: plainer and more repetitive than real books; use a
  books dir or PG19 for benchmark numbers.

As in the reference generator, a stream takes contiguous text from a random book at a random
offset, splits it into sentences with a real sentence splitter (``pysbd``, offline), drops the
partial sentence at the offset and moves on to another random book when one ends. Very short
sentences are skipped by the haystack (it counts their tokens).
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import random
import re
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from rmt.atomic import atomic_file

_START = re.compile(r"^\*\*\* ?START OF.*$", re.MULTILINE)
_END = re.compile(r"^\*\*\* ?END OF.*$", re.MULTILINE)
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")


def decode_book(raw: bytes, name: str = "") -> str:
    """Bytes of a Gutenberg file -> text: UTF-8 unless Latin-1 (``-8`` files or invalid UTF-8)."""
    if Path(name).stem.endswith("-8"):
        text = raw.decode("latin-1")
    else:
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def strip_gutenberg(text: str) -> str:
    """The body of a Gutenberg book: between the ``*** START OF`` and ``*** END OF`` lines."""
    start = _START.search(text)
    if start:
        text = text[start.end():]
    end = _END.search(text)
    if end:
        text = text[: end.start()]
    return text.strip()


class _Book:
    """One book's paragraphs, split into sentences lazily (each paragraph once)."""

    def __init__(self, text: str = "", paragraphs: list[str] | None = None):
        if paragraphs is None:
            paragraphs = [" ".join(p.split()) for p in _PARAGRAPH_BREAK.split(text)]
        self.paragraphs = [p for p in paragraphs if p]
        self.starts, pos = [], 0
        for p in self.paragraphs:
            self.starts.append(pos)
            pos += len(p) + 1
        self.n_chars = pos
        self._split: dict[int, list[str]] = {}

    def sentences_of(self, i: int) -> list[str]:
        if i not in self._split:
            self._split[i] = split_sentences(self.paragraphs[i])
        return self._split[i]

    def split_all(self) -> list[list[str]]:
        return [self.sentences_of(i) for i in range(len(self.paragraphs))]

    @classmethod
    def from_split(cls, paragraphs: list[str], sentences: list[list[str]]) -> "_Book":
        book = cls(paragraphs=paragraphs)
        book._split = dict(enumerate(sentences))
        return book

    def stream_from(self, offset: int) -> Iterator[str]:
        """Sentences from a character offset to the end; the partial sentence at the offset is dropped."""
        i = max(0, bisect.bisect_right(self.starts, offset) - 1)
        inside = offset - self.starts[i]
        first = self.paragraphs[i]
        if inside > 0:
            # Split the rest of the paragraph and drop its first (partial) sentence.
            yield from split_sentences(first[inside:])[1:]
        else:
            yield from self.sentences_of(i)
        for j in range(i + 1, len(self.paragraphs)):
            yield from self.sentences_of(j)


@lru_cache(maxsize=1)
def _segmenter():
    import pysbd

    return pysbd.Segmenter(language="en", clean=False)


def split_sentences(text: str) -> list[str]:
    """Sentences of a paragraph (pysbd, rule-based, offline).

    Calls pysbd's processor directly: ``Segmenter.segment`` would then map every sentence back to
    character spans with one freshly compiled regex per sentence, which costs ~40% more time and
    returns the same sentences (checked on the test books)."""
    return [s.strip() for s in _segmenter().processor(text).process() if s.strip()]


# Books already read in this process, keyed by (path, size, mtime): reused across generate() calls.
_BOOKS: dict[tuple, "_Book"] = {}


def _cache_root() -> Path:
    return Path(os.environ.get("RMT_CACHE_DIR", Path.home() / ".cache" / "rmt")) / "sentences"


def _split_book_file(args) -> tuple[str, list[str], list[list[str]]]:
    """Worker for BooksDir.prepare: (path, cache file) -> paragraphs and their sentences, cached."""
    path, cache_file = args
    path = Path(path)
    book = _Book(strip_gutenberg(decode_book(path.read_bytes(), path.name)))
    sentences = book.split_all()
    cache_file = Path(cache_file)
    cache_file.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"paragraphs": book.paragraphs, "sentences": sentences}, f, ensure_ascii=False)

    atomic_file(cache_file, write)  # a reader sees the whole file or none
    return str(path), book.paragraphs, sentences


class BackgroundSource:
    name = "background"

    def sentences(self, rng: random.Random) -> Iterator[str]:  # pragma: no cover - interface
        raise NotImplementedError


class BooksDir(BackgroundSource):
    """Every ``*.txt`` file of a directory is a book."""

    def __init__(self, path: str | os.PathLike, cache_dir: str | os.PathLike | None = None):
        self.path = Path(path).expanduser()
        self.cache_dir = Path(cache_dir) if cache_dir is not None else _cache_root()
        if not self.path.is_dir():
            raise FileNotFoundError(f"background dir not found: {self.path}")
        self.files = sorted(p for p in self.path.glob("*.txt") if p.is_file() and p.stat().st_size > 0)
        if not self.files:
            raise ValueError(f"background dir {self.path} holds no non-empty *.txt books")
        self.name = f"books:{self.path.name}"

    @staticmethod
    def _key(path: Path) -> tuple:
        st = path.stat()
        return (str(path.resolve()), st.st_size, st.st_mtime_ns)

    def cache_file(self, path: Path) -> Path:
        import pysbd

        digest = hashlib.sha1(path.read_bytes()).hexdigest()
        return self.cache_dir / f"{digest}-pysbd{pysbd.__version__}.json"

    def book(self, path: Path) -> _Book:
        """A book, from this process's memory, else the sentence cache on disk, else the raw file."""
        key = self._key(path)
        if key not in _BOOKS:
            cached = self.cache_file(path)
            if cached.is_file():
                data = json.loads(cached.read_text(encoding="utf-8"))
                _BOOKS[key] = _Book.from_split(data["paragraphs"], data["sentences"])
            else:
                _BOOKS[key] = _Book(strip_gutenberg(decode_book(path.read_bytes(), path.name)))
        return _BOOKS[key]

    def prepare(self, workers: int | None = None, progress: bool = False) -> int:
        """Split every book into sentences once, in parallel, and cache the result on disk.

        pysbd handles ~0.2-0.3 MB of text per second per core, so a long sample from cold books
        is bound by splitting; after ``prepare`` it is bound by tokenizing. Returns the number of
        books split now (0 when all were cached)."""
        todo = [(str(p), str(self.cache_file(p))) for p in self.files if not self.cache_file(p).is_file()]
        if not todo:
            return 0
        workers = workers or min(len(todo), os.cpu_count() or 1)
        if workers > 1:
            import multiprocessing

            # fork: workers need nothing from __main__ (spawn would re-run a user's script or stdin)
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            with context.Pool(workers) as pool:
                results = list(pool.imap_unordered(_split_book_file, todo))
        else:
            results = [_split_book_file(job) for job in todo]
        for path, paragraphs, sentences in results:
            _BOOKS[self._key(Path(path))] = _Book.from_split(paragraphs, sentences)
        return len(todo)

    def sentences(self, rng: random.Random) -> Iterator[str]:
        empty_streak = 0
        while True:
            book = self.book(rng.choice(self.files))
            produced = False
            for sentence in book.stream_from(rng.randrange(max(1, book.n_chars))):
                produced = True
                yield sentence
            empty_streak = 0 if produced else empty_streak + 1
            if empty_streak > 100 * len(self.files):
                raise ValueError(f"background dir {self.path}: books yield no sentences")


class PG19(BackgroundSource):
    """PG19 (Rae et al. 2019) streamed with ``datasets``; books in a seeded shuffled order.

    Online only; the tests do not call it.
    """

    name = "pg19"

    def __init__(self, split: str = "test", dataset: str = "deepmind/pg19", buffer_size: int = 100):
        self.split, self.dataset, self.buffer_size = split, dataset, buffer_size

    def sentences(self, rng: random.Random) -> Iterator[str]:
        import datasets

        try:
            stream = datasets.load_dataset(self.dataset, split=self.split, streaming=True)
        except Exception as exc:  # offline, no such dataset, ...: one line, not a network traceback
            raise ValueError(f"background 'pg19' cannot be streamed from {self.dataset!r}: "
                             f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        while True:
            shuffled = stream.shuffle(seed=rng.randrange(2**31), buffer_size=self.buffer_size)
            for item in shuffled:
                book = _Book(item["text"])
                if book.n_chars:
                    yield from book.stream_from(rng.randrange(book.n_chars))


class FallbackText(BackgroundSource):
    """Procedural prose about landscapes, weather and travel: needs no data (a fallback only).

    Its words avoid the bAbI vocabulary (people, rooms, objects) so it never answers a question.
    """

    name = "fallback"

    SUBJECTS = ["the old road", "a grey heron", "the river", "the wind from the hills", "a small boat",
                "the village bell", "the autumn rain", "a line of poplars", "the stone bridge",
                "the evening light", "a flock of starlings", "the miller's cart", "the long valley",
                "a thin column of smoke", "the distant sea", "the orchard wall", "the shepherd's dog",
                "a lantern", "the morning mist", "the lighthouse keeper", "a travelling painter"]
    VERBS = ["drifted past", "wound slowly toward", "rose above", "leaned against", "followed",
             "disappeared behind", "shone upon", "crossed", "circled over", "waited beside",
             "hurried along", "settled upon", "looked out over", "turned away from"]
    OBJECTS = ["the meadows", "the quiet harbour", "a row of cottages", "the wet fields", "the pine wood",
               "the chalk cliffs", "the market square", "the frozen pond", "the far ridge",
               "the ruined chapel", "the salt marsh", "the vineyard terraces", "the ferry landing",
               "the heather", "the broad estuary", "the sleeping town"]
    ADVERBIALS = ["in the fading light", "long before dawn", "as the tide turned", "without a sound",
                  "for the third time that week", "while the clouds gathered", "under a pale sky",
                  "after the storm had passed", "as it had done for centuries", "in no particular hurry"]
    CLAUSES = ["and nobody in the valley remembered a finer season",
               "though the travellers hardly noticed it",
               "which reminded the oldest fishermen of their youth",
               "so that the whole country seemed to hold its breath",
               "and the smell of wood smoke hung in the air",
               "while somewhere a cart creaked on the stones",
               "but the swallows had already gone south"]
    OPENERS = ["It was said that", "Everyone agreed that", "In those years", "Once more",
               "By the time the bells rang,", "Far to the north,", "For a while", "At last"]

    def sentence(self, rng: random.Random) -> str:
        parts = []
        if rng.random() < 0.3:
            parts.append(rng.choice(self.OPENERS))
        parts += [rng.choice(self.SUBJECTS), rng.choice(self.VERBS), rng.choice(self.OBJECTS)]
        if rng.random() < 0.6:
            parts.append(rng.choice(self.ADVERBIALS))
        if rng.random() < 0.5:
            parts[-1] += ","
            parts.append(rng.choice(self.CLAUSES))
        text = " ".join(parts)
        return text[0].upper() + text[1:] + "."

    def sentences(self, rng: random.Random) -> Iterator[str]:
        while True:
            yield self.sentence(rng)


def get_background(background=None) -> BackgroundSource:
    """``None``/``"fallback"`` -> FallbackText, ``"pg19"`` -> PG19, a path -> BooksDir, or a source."""
    if isinstance(background, BackgroundSource):
        return background
    if background is None or background == "fallback":
        return FallbackText()
    if background == "pg19":
        return PG19()
    if isinstance(background, (str, os.PathLike)):
        return BooksDir(background)
    raise ValueError(f"background must be None, 'fallback', 'pg19' or a books dir, got {background!r}")
