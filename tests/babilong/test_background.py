"""Background sources: Gutenberg cleanup, sentence streams, the built-in fallback."""

import random

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


