"""Background text: the hay the facts are hidden in.

Three sources, one interface (``sentences(rng)``: an endless stream of sentences):

* ``BooksDir(path)``: plain-text books (e.g. Project Gutenberg). Headers/footers are cut at the
  ``*** START OF`` / ``*** END OF`` lines, ``-8`` files are decoded as Latin-1, CRLF normalised.
  A file that is not text (NUL or other control bytes, e.g. random bytes or a zip renamed
  ``.txt``) is refused with one line naming it.
* ``PG19()``: the PG19 books through ``datasets`` streaming (online users; not used by tests).
* ``FallbackText()``: prose generated on the fly from a small built-in grammar, so a fresh machine
  needs no data at all. It is a *fallback*: plainer and more repetitive than real books; use a
  books dir or PG19 for benchmark numbers.

As in the reference generator, a stream takes contiguous text from a random book at a random
offset, drops the partial sentence at the offset and moves on to another random book when one
ends. A book is split into sentences once, on first use, with ``sentencex`` (rule-based, its rules
ship inside the wheel, ~50-90 MB/s: the whole 7 MB test corpus in well under a second), and every
stream reads that one split, so a sample does not depend on which books were split before.
Very short sentences are skipped by the haystack (it counts their tokens).
"""

from __future__ import annotations

import bisect
import codecs
import hashlib
import os
import random
import re
from collections import OrderedDict
from pathlib import Path
from typing import Iterator

import sentencex

from rmt.errors import UsageError

_START = re.compile(r"^\*\*\* ?START OF.*$", re.MULTILINE)
_END = re.compile(r"^\*\*\* ?END OF.*$", re.MULTILINE)
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")

# Bytes a text file does not hold: C0 controls other than tab, LF, VT, FF, CR and the DOS end-of-file
# mark (^Z), and DEL. Random bytes are ~11% of them; a book, none or a stray few.
_CONTROL_BYTES = bytes(b for b in range(32) if b not in b"\t\n\x0b\x0c\r\x1a") + b"\x7f"
MAX_CONTROL_SHARE = 0.01
_SNIFF_BYTES = 4096  # enough to catch random bytes (~16 NULs expected), cheap for thousands of books
_UTF32_BOMS = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def check_text(raw: bytes, name: str = "") -> None:
    """Refuse bytes that are not text (one-line ValueError naming the file).

    Latin-1 decodes *any* bytes, so without this check a binary file (random bytes, an image or a
    zip renamed ``.txt``) would enter the haystack as garbage. Text in UTF-16/32 with a BOM is text."""
    if not raw or raw.startswith(_UTF32_BOMS + _UTF16_BOMS):
        return
    controls = len(raw) - len(raw.translate(None, _CONTROL_BYTES))
    if b"\x00" in raw or controls > MAX_CONTROL_SHARE * len(raw):
        raise UsageError(f"background file {name} is not text ({controls / len(raw):.1%} of its bytes are NUL or "
                         f"control bytes); background books must be plain text (UTF-8 or Latin-1)")


def decode_book(raw: bytes, name: str = "") -> str:
    """Bytes of a Gutenberg file -> text: UTF-8 unless Latin-1 (``-8`` files or invalid UTF-8);
    UTF-16/32 when the file starts with a BOM. Binary input raises ValueError (``check_text``)."""
    check_text(raw, name)
    if raw.startswith(_UTF32_BOMS + _UTF16_BOMS):
        try:
            text = raw.decode("utf-32" if raw.startswith(_UTF32_BOMS) else "utf-16")
        except UnicodeDecodeError as exc:
            raise UsageError(f"background file {name} starts with a UTF-16/32 byte-order mark but does not "
                             f"decode as such ({exc.reason} at byte {exc.start})") from None
    elif Path(name).stem.endswith("-8"):
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


# ---------------------------------------------------------------------------------------- splitting
# sentencex handles a normal paragraph at ~90 MB/s, but it keeps a quotation together as one sentence,
# so in a book without blank-line paragraph breaks (one giant "paragraph") an unclosed quote swallows
# the rest of the book, and it slows down to ~3 MB/s. So a paragraph longer than CHUNK_CHARS is first
# cut into chunks at likely sentence ends, and any "sentence" still longer than MAX_SENTENCE_CHARS
# (text without sentence ends, a quotation a page long) is cut at a likely sentence end, else a clause
# end, else a space. On the 18 test books this changes 11 of 55,000 sentences.
CHUNK_CHARS = 20_000
MAX_SENTENCE_CHARS = 2_000
# A lowercase word, a terminator, closing quotes/brackets, space, then a capital: a sentence end that is
# no abbreviation like "Mr." or "St." (these start with a capital).
_LIKELY_END = re.compile(r"\b[a-z]{2,}[.!?]+[\"'\u201d\u2019)\]]*\s+(?=[\"'\u201c\u2018(\[]?[A-Z])")
_CLAUSE_END = re.compile(r"[,;:\u2014]\s+")


def _cut_points(text: str, max_chars: int) -> Iterator[int]:
    """Where to cut ``text`` so no piece is longer than ``max_chars`` (and, where possible, none
    shorter than half of it): at the last likely sentence end, else clause end, else space."""
    start, n = 0, len(text)
    while n - start > max_chars:
        lo, hi = start + max_chars // 2, start + max_chars
        end = None
        for pattern in (_LIKELY_END, _CLAUSE_END):
            for match in pattern.finditer(text, lo, hi):
                end = match.end()
            if end is not None:
                break
        if end is None:
            space = text.rfind(" ", lo, hi)
            end = space + 1 if space >= 0 else hi
        yield end
        start = end


def _pieces(text: str, max_chars: int) -> Iterator[tuple[int, str]]:
    start = 0
    for end in list(_cut_points(text, max_chars)) + [len(text)]:
        yield start, text[start:end]
        start = end


def sentence_spans(paragraph: str) -> list[tuple[int, str]]:
    """``(offset, sentence)`` for each sentence of a whitespace-normalised paragraph."""
    spans = []
    for chunk_start, chunk in _pieces(paragraph, CHUNK_CHARS):
        pos = 0
        for piece in sentencex.segment("en", chunk):
            sentence = piece.strip()
            if not sentence:
                pos += len(piece)
                continue
            found = chunk.find(sentence, pos)  # sentencex returns contiguous pieces; find() keeps us safe
            start = found if found >= 0 else pos
            pos = start + len(sentence)
            for offset, part in _pieces(sentence, MAX_SENTENCE_CHARS):
                part = part.strip()
                if part:
                    spans.append((chunk_start + start + offset, part))
    return spans


def split_sentences(paragraph: str) -> list[str]:
    """Sentences of a paragraph (``sentencex``, rule-based, offline; see ``sentence_spans``)."""
    return [s for _, s in sentence_spans(" ".join(paragraph.split()))]


class _Book:
    """One book as its sentences in order and the character offset where each starts.

    The whole book is split once, when it is first read: every stream reads the same sentences,
    whatever offset it starts from (a fresh split from a mid-paragraph offset could differ)."""

    def __init__(self, text: str):
        self.sentences: list[str] = []
        self.starts: list[int] = []
        pos = 0
        for raw in _PARAGRAPH_BREAK.split(text):
            paragraph = " ".join(raw.split())  # lines of a paragraph joined, whitespace normalised
            if not paragraph:
                continue
            for offset, sentence in sentence_spans(paragraph):
                self.sentences.append(sentence)
                self.starts.append(pos + offset)
            pos += len(paragraph) + 1
        self.n_chars = pos

    def stream_from(self, offset: int) -> Iterator[str]:
        """Sentences from a character offset to the end; the partial sentence at the offset is dropped."""
        for i in range(bisect.bisect_left(self.starts, offset), len(self.sentences)):
            yield self.sentences[i]


class _BookCache:
    """Books already split in this process, keyed by (path, size, mtime), reused across generate()
    calls; the least recently used are dropped past ``max_chars`` (a PG19-sized dir does not fit)."""

    def __init__(self, max_chars: int = 512_000_000):
        self.max_chars, self.chars = max_chars, 0
        self._books: OrderedDict[tuple, _Book] = OrderedDict()

    def __contains__(self, key: tuple) -> bool:
        return key in self._books

    def get(self, key: tuple) -> _Book | None:
        if key in self._books:
            self._books.move_to_end(key)
        return self._books.get(key)

    def put(self, key: tuple, book: _Book) -> _Book:
        self._books[key] = book
        self.chars += book.n_chars
        while len(self._books) > 1 and self.chars > self.max_chars:
            self.chars -= self._books.popitem(last=False)[1].n_chars
        return book

    def clear(self) -> None:
        self._books.clear()
        self.chars = 0


_BOOKS = _BookCache()


class BackgroundSource:
    name = "background"

    def sentences(self, rng: random.Random) -> Iterator[str]:  # pragma: no cover - interface
        raise NotImplementedError

    def fingerprint(self) -> str:
        """sha256 of what decides the text (a resumed generation must read the same background)."""
        return hashlib.sha256(f"{type(self).__name__}:{self.name}".encode()).hexdigest()

    def identity(self) -> dict:
        return {"name": self.name, "sha256": self.fingerprint()}


class BooksDir(BackgroundSource):
    """Every ``*.txt`` file of a directory is a book (checked to be text when the dir is opened)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).expanduser()
        if not self.path.is_dir():
            raise UsageError(f"background dir not found: {self.path}")
        self.files = sorted(p for p in self.path.glob("*.txt") if p.is_file() and p.stat().st_size > 0)
        if not self.files:
            raise UsageError(f"background dir {self.path} holds no non-empty *.txt books")
        for file in self.files:  # refuse a binary file before any sample is made (the whole file is checked on read)
            with open(file, "rb") as f:
                check_text(f.read(_SNIFF_BYTES), str(file))
        self.name = f"books:{self.path.name}"

    def fingerprint(self) -> str:
        """sha256 over every book's file name, size and bytes (in name order): a book added, removed,
        renamed or edited changes it. Reads the whole dir once (~1 GB/s)."""
        digest = hashlib.sha256()
        for path in self.files:
            digest.update(f"{path.name}\0{path.stat().st_size}\0".encode())
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
        return digest.hexdigest()

    @staticmethod
    def _key(path: Path) -> tuple:
        st = path.stat()
        return (str(path.resolve()), st.st_size, st.st_mtime_ns)

    def book(self, path: Path) -> _Book:
        """A book, split into sentences: from this process's memory, else read and split now."""
        key = self._key(path)
        return _BOOKS.get(key) or _BOOKS.put(key, _Book(strip_gutenberg(decode_book(path.read_bytes(), str(path)))))

    def prepare(self, progress: bool | None = None) -> int:
        """Read and split every book now, with a progress bar over the bytes read (``progress=None``:
        shown when stderr is a terminal). Returns the number of books split now (0: all were split).

        Optional: books are split on first use anyway, and a sample is the same either way."""
        from tqdm import tqdm  # lazy: background.py is imported by `rmt --help` (tqdm ~40 ms)

        todo = [p for p in self.files if self._key(p) not in _BOOKS]
        if not todo:
            return 0
        sizes = [p.stat().st_size for p in todo]
        with tqdm(total=sum(sizes), unit="B", unit_scale=True, desc=f"splitting {len(todo)} books into sentences",
                  disable=None if progress is None else not progress, leave=False) as bar:
            for path, size in zip(todo, sizes):
                self.book(path)
                bar.update(size)
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
                raise UsageError(f"background dir {self.path}: books yield no sentences")


class PG19(BackgroundSource):
    """PG19 (Rae et al. 2019) streamed with ``datasets``; books in a seeded shuffled order.

    Online only; the tests do not call it.
    """

    name = "pg19"

    def __init__(self, split: str = "test", dataset: str = "deepmind/pg19", buffer_size: int = 100):
        self.split, self.dataset, self.buffer_size = split, dataset, buffer_size

    def fingerprint(self) -> str:  # a stream's bytes cannot be hashed up front: the dataset, split and shuffle
        return hashlib.sha256(f"{self.dataset}:{self.split}:{self.buffer_size}".encode()).hexdigest()

    def sentences(self, rng: random.Random) -> Iterator[str]:
        import datasets  # lazy: datasets takes ~1 s to import; only PG19 needs it

        try:
            stream = datasets.load_dataset(self.dataset, split=self.split, streaming=True)
        except Exception as exc:  # offline, no such dataset, ...: one line, not a network traceback
            raise UsageError(f"background 'pg19' cannot be streamed from {self.dataset!r}: "
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

    def fingerprint(self) -> str:
        """sha256 of the grammar (its word lists): the text is a function of it and the seed."""
        lists = [self.SUBJECTS, self.VERBS, self.OBJECTS, self.ADVERBIALS, self.CLAUSES, self.OPENERS]
        return hashlib.sha256(repr(lists).encode()).hexdigest()


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
    raise UsageError(f"background must be None, 'fallback', 'pg19' or a books dir, got {background!r}")
