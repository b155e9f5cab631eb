"""Haystack length precision: at most the target, at least 99% of it, whole sentences where possible."""

import itertools
import random

import pytest

from rmt.babilong import generate
from rmt.babilong.haystack import LOOKAHEAD, FactsTooLong, build_haystack, tolerance_of
from rmt.babilong.tokens import Counter, get_counter

FACTS = ["Mary moved to the bathroom.", "John went to the hallway."]


def _counters(request):
    names = ["pretokens", request.getfixturevalue("bpe_tokenizer_file")]
    try:
        names.append(request.getfixturevalue("gpt2_tokenizer_dir"))
    except pytest.skip.Exception:
        pass
    return [get_counter(str(n)) for n in names]


@pytest.mark.parametrize("length", ["1k", "4k", 8192, 20_000])
def test_lands_within_one_percent_below_the_target(request, length):
    for counter in _counters(request):
        for r in generate("qa2", length, 6, seed=3, tokenizer=counter):
            budget = r["target_tokens"] - r["prompt_allowance"]
            assert budget - tolerance_of(budget) <= r["n_tokens"] <= budget, (counter.name, length)
            assert r["n_tokens"] == counter(r["input"])  # still counted exactly, piece by piece


def test_books_land_within_one_percent_below_the_target(background_dir, bpe_tokenizer_file):
    counter = get_counter(str(bpe_tokenizer_file))
    for length in ("2k", 5000):
        for r in generate("qa1", length, 8, seed=0, background=background_dir, tokenizer=counter):
            budget = r["target_tokens"] - r["prompt_allowance"]
            assert budget - tolerance_of(budget) <= r["n_tokens"] <= budget
            assert r["n_tokens"] == counter(r["input"])


def _tag(i):
    """A distinct one-word (one pre-token) name for sentence ``i``: Ba, Bb, ..."""
    letters = ""
    while True:
        i, d = divmod(i, 26)
        letters = chr(97 + d) + letters
        if not i:
            return "B" + letters


def _sentences(n_words, first=0):
    """Endless distinct sentences of ``n_words`` words: ``n_words + 1`` pre-tokens with the period."""
    for i in itertools.count(first):
        yield " ".join([_tag(i)] + ["word"] * (n_words - 2)) + " end."


def test_whole_sentences_when_they_land_else_one_cut_sentence_fills_the_gap():
    counter = get_counter("pretokens")
    rng = random.Random(0)
    # sentences of 50 tokens: 1000 lands exactly with whole sentences
    hay = build_haystack([], _sentences(49), counter, 1000, rng)
    assert hay["n_tokens"] == 1000 and not hay["background_cut"] and hay["n_background_sentences"] == 20
    # 1020: 20 whole sentences are 20 short (over the 10-token tolerance) and no later one fits whole,
    # so the 21st is cut at a word boundary: only the last piece is partial, and it lands exactly.
    hay = build_haystack([], _sentences(49), counter, 1020, rng)
    assert hay["n_tokens"] == 1020 and hay["background_cut"]
    pieces = hay["input"].split(" end. ")
    assert len(pieces) == 21 and not pieces[-1].endswith("end.") and pieces[-1].startswith(_tag(20) + " ")
    # 1005: 5 short is within tolerance: whole sentences only
    hay = build_haystack([], _sentences(49), counter, 1005, rng)
    assert hay["n_tokens"] == 1000 and not hay["background_cut"]


def test_a_later_sentence_that_fits_whole_is_preferred_to_a_cut():
    counter = get_counter("pretokens")

    def stream():  # 20 sentences of 50 tokens, then long ones, then one of 15 within the lookahead
        yield from itertools.islice(_sentences(49), 20)
        yield from itertools.islice(_sentences(49, first=100), LOOKAHEAD - 1)
        yield from _sentences(14, first=200)

    hay = build_haystack([], stream(), counter, 1015, random.Random(0))
    assert hay["n_tokens"] == 1015 and not hay["background_cut"] and hay["input"].endswith(_tag(200) + " word" * 12 + " end.")


def test_never_above_the_target_when_the_first_piece_counts_more_alone():
    """A tokenizer may count a text differently at the very start (no separator before it)."""
    words = get_counter("pretokens")
    counter = Counter("start-marker", lambda texts: [words(t) + (0 if t.startswith(" ") else 2) for t in texts])
    for seed in range(20):
        rng = random.Random(seed)
        hay = build_haystack(FACTS, _sentences(29, first=seed * 1000), counter, 600, rng)
        assert 600 - tolerance_of(600) <= hay["n_tokens"] <= 600
        assert hay["n_tokens"] == counter(hay["input"])
        assert all(f in hay["input"] for f in FACTS)


def test_facts_are_never_cut_and_never_make_an_input_longer_than_asked():
    counter = get_counter("pretokens")
    with pytest.raises(FactsTooLong, match=r"the 2 facts alone are 12 tokens, more than the 8 asked for"):
        build_haystack(FACTS, _sentences(29), counter, 8, random.Random(0))
    hay = build_haystack(FACTS, _sentences(29), counter, 12, random.Random(0))  # they just fit: no background
    assert hay["input"] == " ".join(FACTS) and hay["n_tokens"] == counter(" ".join(FACTS)) == 12
    hay = build_haystack(FACTS, _sentences(29), counter, 0, random.Random(0))  # length 0: the facts alone
    assert hay["input"] == " ".join(FACTS)


@pytest.mark.parametrize("target", [1020, 77, 333])
def test_facts_go_only_between_whole_sentences_never_after_a_cut_one(target):
    """Issue 17: a cut background piece followed by a fact ("If you will Daniel travelled to the kitchen.")."""
    counter = get_counter("pretokens")
    cuts = 0
    for seed in range(60):
        hay = build_haystack(FACTS, _sentences(29, first=seed * 100), counter, target, random.Random(seed))
        assert hay["n_tokens"] <= target
        text = hay["input"]
        for fact in FACTS:
            before = text[: text.index(fact)].rstrip()
            assert before == "" or before.endswith(("end.",) + tuple(FACTS)), (seed, text)
        if hay["background_cut"]:
            cuts += 1
            assert not text.endswith(("end.",) + tuple(FACTS))  # the cut piece ends the input
    assert cuts > 30  # the case under test happened
