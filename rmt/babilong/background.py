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
import os
import random
import re
from functools import lru_cache
from pathlib import Path
from typing import Iterator

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

    def __init__(self, text: str):
        self.paragraphs = [" ".join(p.split()) for p in _PARAGRAPH_BREAK.split(text)]
        self.paragraphs = [p for p in self.paragraphs if p]
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
    """Sentences of a paragraph (pysbd, rule-based, offline)."""
    return [s.strip() for s in _segmenter().segment(text) if s.strip()]


class BackgroundSource:
    name = "background"

    def sentences(self, rng: random.Random) -> Iterator[str]:  # pragma: no cover - interface
        raise NotImplementedError


class BooksDir(BackgroundSource):
    """Every ``*.txt`` file of a directory is a book."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).expanduser()
        if not self.path.is_dir():
            raise FileNotFoundError(f"background dir not found: {self.path}")
        self.files = sorted(p for p in self.path.glob("*.txt") if p.is_file() and p.stat().st_size > 0)
        if not self.files:
            raise ValueError(f"background dir {self.path} holds no non-empty *.txt books")
        self.name = f"books:{self.path.name}"
        self._books: dict[Path, _Book] = {}

    def book(self, path: Path) -> _Book:
        if path not in self._books:
            self._books[path] = _Book(strip_gutenberg(decode_book(path.read_bytes(), path.name)))
        return self._books[path]

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

        stream = datasets.load_dataset(self.dataset, split=self.split, streaming=True)
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
