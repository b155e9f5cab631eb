"""Background sources: Gutenberg cleanup, sentence streams, the built-in fallback."""

import hashlib
import json
import os
import random
import subprocess
import sys

import pytest

from rmt.babilong.background import (
    BooksDir, FallbackText, decode_book, get_background, split_sentences, strip_gutenberg,
)

RAW = (b"The Project Gutenberg EBook of X\r\nheader junk\r\n*** START OF THIS PROJECT GUTENBERG EBOOK X ***\r\n"
       b"\r\nIt was a caf\xe9 by the sea. The wind was cold.\r\nShe waited.\r\n\r\nA new paragraph began here.\r\n"
       b"*** END OF THIS PROJECT GUTENBERG EBOOK X ***\r\nlicense junk\r\n")


def test_latin1_crlf_header_footer(tmp_path):
    text = strip_gutenberg(decode_book(RAW, "12345-8.txt"))
    assert text.startswith("It was a café by the sea.") and text.endswith("A new paragraph began here.")
    assert "\r" not in text and "junk" not in text and "Gutenberg" not in text


def test_utf8_books_decode_as_utf8():
    assert decode_book("café".encode("utf-8"), "52834-0.txt") == "café"


def test_split_sentences_uses_a_real_splitter():
    assert split_sentences("Mr. Smith went to Washington. He arrived at 5 p.m. on Monday.") == [
        "Mr. Smith went to Washington.", "He arrived at 5 p.m. on Monday."]


def test_books_dir_stream_is_contiguous_text(tmp_path):
    (tmp_path / "book-8.txt").write_bytes(RAW)
    books = BooksDir(tmp_path)
    book = books.book(books.files[0])
    whole = ["It was a café by the sea.", "The wind was cold.", "She waited.", "A new paragraph began here."]
    assert list(book.stream_from(0)) == whole  # lines of a paragraph joined, then split into sentences
    assert list(book.stream_from(5)) == whole[1:]  # an offset inside a sentence drops that partial sentence


def test_real_books_decode_cleanly(background_dir):
    books = get_background(background_dir)
    assert len(books.files) == 18
    rng = random.Random(0)
    stream = books.sentences(rng)
    sentences = [next(stream) for _ in range(300)]
    assert all("\r" not in s and "\ufffd" not in s and "*** START" not in s for s in sentences)
    assert all(s == " ".join(s.split()) for s in sentences)  # whitespace normalised
    latin = [p for p in books.files if p.stem.endswith("-8")][0]
    body = books.book(latin)
    assert body.sentences and "Project Gutenberg" not in " ".join(body.sentences[:20])


def test_fallback_is_seeded_and_varied():
    a = FallbackText().sentences(random.Random(3))
    b = FallbackText().sentences(random.Random(3))
    first = [next(a) for _ in range(200)]
    assert first == [next(b) for _ in range(200)]
    assert len(set(first)) > 190
    for s in first:
        for word in ("Mary", "John", "Daniel", "Sandra", "kitchen", "hallway", "bathroom", "football", "milk"):
            assert word not in s




# ------------------------------------------------------------------ splitting: fast, lossless, once per book
def test_sentence_spans_lose_no_text_and_point_at_their_sentences(background_dir):
    from rmt.babilong.background import sentence_spans

    books = get_background(background_dir)
    text = strip_gutenberg(decode_book(books.files[0].read_bytes(), books.files[0].name))
    paragraphs = [" ".join(p.split()) for p in text.split("\n\n") if p.strip()][:300]
    for paragraph in paragraphs + [" ".join(text.split())]:  # and the whole book as one giant line
        _assert_spans_cover(paragraph, sentence_spans(paragraph))


def _assert_spans_cover(text, spans):
    """Each sentence is the text at its offset, in order, and only whitespace lies between them."""
    end = 0
    for offset, sentence in spans:
        assert text[offset: offset + len(sentence)] == sentence and not text[end:offset].strip()
        end = offset + len(sentence)
    assert not text[end:].strip()


def test_giant_lines_and_long_sentences_are_cut_into_bounded_sentences(tmp_path):
    from rmt.babilong.background import MAX_SENTENCE_CHARS, sentence_spans

    rng = random.Random(0)
    words = [rng.choice(["river", "stone", "hill", "cloud", "light", "road", "field"]) for _ in range(60_000)]
    no_sentence_ends = " ".join(words)  # ~340k characters, not one terminator
    spans = sentence_spans(no_sentence_ends)
    _assert_spans_cover(no_sentence_ends, spans)
    assert all(len(s) <= MAX_SENTENCE_CHARS for _, s in spans) and len(spans) > 150
    # an unclosed quotation (which sentencex keeps as one sentence) in a book without paragraph breaks
    quoted = '"' + " ".join(f"The {w} was there at dawn." for w in words[:20_000])
    spans = sentence_spans(quoted)
    _assert_spans_cover(quoted, spans)
    assert max(len(s) for _, s in spans) <= MAX_SENTENCE_CHARS


def _no_paragraph_books(tmp_path, background_dir, n=3):
    """Books whose lines are not separated by blank lines (each a single paragraph), as in issue 9."""
    out = tmp_path / "flat"
    out.mkdir()
    for path in get_background(background_dir).files[:n]:
        text = strip_gutenberg(decode_book(path.read_bytes(), path.name))
        (out / f"{path.stem}-flat.txt").write_text("\n".join(line for line in text.splitlines() if line.strip()))
    return out


def test_books_without_paragraph_breaks_are_split_once(tmp_path, background_dir, monkeypatch):
    """Issue 9: every stream re-split the rest of its (book-long) paragraph: 14+ minutes for 256k."""
    from rmt.babilong import background, generate

    flat = _no_paragraph_books(tmp_path, background_dir)
    background._BOOKS.clear()
    chars = []  # characters handed to the sentence splitter
    for name in ("sentence_spans", "split_sentences"):  # whichever the module splits with
        if hasattr(background, name):
            split = getattr(background, name)
            monkeypatch.setattr(background, name, lambda p, split=split: chars.append(len(p)) or split(p))
    records = generate("qa1", 2000, 12, seed=0, background=flat, tokenizer="pretokens")
    book_chars = sum(len(" ".join(p.read_text().split())) for p in flat.iterdir())
    assert len(chars) <= 3 and sum(chars) <= book_chars  # each book split at most once, whole
    assert all(0.99 * 2000 <= r["n_tokens"] <= 2000 for r in records)


def test_streams_read_one_split_whatever_was_split_before(tmp_path, background_dir):
    """A sample does not depend on which books were split before (lazily, or all by prepare)."""
    from rmt.babilong import background, generate

    def dump():
        return json.dumps(generate("qa2", "4k", 4, seed=5, background=background_dir, tokenizer="pretokens"))

    background._BOOKS.clear()
    lazily = dump()
    background._BOOKS.clear()
    assert BooksDir(background_dir).prepare(progress=False) == 18
    assert dump() == lazily
    book = BooksDir(background_dir).book(BooksDir(background_dir).files[2])
    for offset in random.Random(0).sample(range(book.n_chars), 20):  # any offset: a suffix of the one split
        streamed = list(book.stream_from(offset))
        assert streamed == book.sentences[len(book.sentences) - len(streamed):]


def test_prepare_shows_progress(tmp_path, capsys):
    from rmt.babilong import background

    (tmp_path / "a-8.txt").write_bytes(RAW)
    (tmp_path / "b.txt").write_text("*** START OF X ***\nOne long sentence here. Another one there.\n\nThird.\n*** END OF X ***\n")
    background._BOOKS.clear()
    books = BooksDir(tmp_path)
    assert books.prepare(progress=True) == 2
    assert "splitting 2 books into sentences" in capsys.readouterr().err
    assert books.prepare(progress=True) == 0  # already split in this process
    assert books.book(books.files[1]).sentences == ["One long sentence here.", "Another one there.", "Third."]


# ------------------------------------------------------------------ binary input is refused, naming the file
def test_binary_background_file_is_refused_naming_it(tmp_path):
    from rmt.babilong import generate

    (tmp_path / "book.txt").write_text("A quiet sentence about the sea and the sky. " * 200)
    noise = tmp_path / "noise.txt"
    noise.write_bytes(random.Random(0).randbytes(50_000))
    with pytest.raises(ValueError, match=r"noise\.txt is not text") as info:
        generate("qa1", "2k", 1, background=tmp_path)
    assert "\n" not in str(info.value)
    # binary after a clean start: caught when the book is read
    noise.write_bytes(b"Plain text at first. " * 300 + random.Random(1).randbytes(50_000))
    with pytest.raises(ValueError, match=r"noise\.txt is not text"):
        BooksDir(tmp_path).book(noise)


def test_binary_background_file_one_error_line_from_the_cli(tmp_path):
    books = tmp_path / "books"
    books.mkdir()
    (books / "book.txt").write_text("A quiet sentence about the sea and the sky. " * 200)
    (books / "noise.txt").write_bytes(random.Random(0).randbytes(50_000))
    out = tmp_path / "out.jsonl"
    proc = subprocess.run([sys.executable, "-m", "rmt", "generate", "--lengths", "2k", "--samples", "1",
                           "--background", str(books), "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: background file ")
    assert "noise.txt is not text" in proc.stderr and not out.exists()


def test_text_in_other_encodings_is_still_text():
    assert decode_book("caf\u00e9 au lait".encode("utf-16"), "x.txt") == "caf\u00e9 au lait"  # with its BOM
    assert decode_book("caf\u00e9\tau\x0clait\r\n".encode("latin-1"), "x-8.txt") == "caf\u00e9\tau\x0clait\n"


def test_books_sample_is_byte_identical_across_processes(background_dir):
    """Same seed, same bytes in a fresh process (string hashing differs between processes)."""
    from rmt.babilong import generate

    code = ("import hashlib, json, sys; from rmt.babilong import generate;"
            f"r = generate('qa3', '2k', 2, seed=11, background={str(background_dir)!r}, tokenizer='pretokens');"
            "print(hashlib.sha256(json.dumps(r).encode()).hexdigest())")
    digests = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env=os.environ | {"PYTHONHASHSEED": seed}).stdout.strip() for seed in ("1", "2")}
    here = generate("qa3", "2k", 2, seed=11, background=background_dir, tokenizer="pretokens")
    assert digests == {hashlib.sha256(json.dumps(here).encode()).hexdigest()}
