"""generate(): determinism, correctness of every sample, lengths, token offsets, backgrounds."""

import json
import subprocess
import sys

import pytest

from rmt.babilong import generate, iter_records
from rmt.babilong.haystack import parse_length
from rmt.babilong.tokens import get_counter
from rmt.errors import UsageError

from .solvers import SOLVERS


def _dump(records):
    return "\n".join(json.dumps(r, sort_keys=True) for r in records)


def test_same_seed_same_bytes_other_seed_differs(background_dir):
    kwargs = dict(task="qa2", length="2k", samples=3, background=background_dir)
    a = _dump(generate(seed=7, **kwargs))
    assert a == _dump(generate(seed=7, **kwargs))
    assert a != _dump(generate(seed=8, **kwargs))


def test_facts_shared_across_lengths_background_differs():
    short = generate("qa1", "1k", 2, seed=0)
    long = generate("qa1", "4k", 2, seed=0)
    for a, b in zip(short, long):
        assert a["facts"] == b["facts"] and a["target"] == b["target"]
        assert a["input"] != b["input"]


@pytest.mark.parametrize("task", ["qa1", "qa2", "qa3", "qa5", "qa7", "qa8", "qa11", "qa14", "qa19", "qa20"])
def test_every_answer_right_and_supporting_facts_in_input_in_order(task):
    for r in generate(task, "1k", 8, seed=1):
        assert SOLVERS[task](r["facts"], r["question"]) == r["target"]
        text, pos = r["input"], 0
        for fact in r["facts"]:  # every fact is in the input, in story order
            found = text.find(fact, pos)
            assert found >= 0, fact
            pos = found + len(fact)
        assert r["question"] not in text  # the question is kept apart


def test_length_hits_target_within_one_sentence():
    counter = get_counter("pretokens")
    for length in ("1k", "8k", 20000):
        name, tokens = parse_length(length)
        for r in generate("qa1", length, 3, seed=2, tokenizer="pretokens"):
            budget = tokens - r["prompt_allowance"]
            longest = max(counter.count([" " + s for s in r["input"].split(". ")]))
            assert abs(r["n_tokens"] - budget) <= longest
            assert r["n_tokens"] == counter(r["input"])  # counted per sentence == counted whole


def test_token_offsets_point_at_facts_with_a_bpe_tokenizer(bpe_tokenizer_file):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(bpe_tokenizer_file))
    for r in generate("qa2", 3000, 3, seed=3, tokenizer=str(bpe_tokenizer_file)):
        ids = tok.encode(r["input"], add_special_tokens=False).ids
        # per-sentence counting matches tokenizing the whole text (byte-level BPE: exact)
        assert len(ids) == r["n_tokens"]
        assert abs(r["n_tokens"] - 3000) <= 60
        for j, offset in zip(r["supporting"], r["supporting_offsets"]):
            fact = r["facts"][j]
            decoded = tok.decode(ids[offset: offset + len(tok.encode(" " + fact).ids)])
            assert decoded.strip() == fact


def test_tokenizer_objects_are_accepted(bpe_tokenizer_file):
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer.from_file(str(bpe_tokenizer_file))
    hf = PreTrainedTokenizerFast(tokenizer_object=raw)
    a = generate("qa1", 800, 2, seed=0, tokenizer=raw)
    b = generate("qa1", 800, 2, seed=0, tokenizer=hf)
    assert [r["input"] for r in a] == [r["input"] for r in b]
    assert [r["n_tokens"] for r in a] == [r["n_tokens"] for r in b]


def test_books_background_is_clean_text(background_dir):
    for r in generate("qa1", "4k", 2, seed=0, background=background_dir):
        assert r["background"] == "books:background"
        assert "\r" not in r["input"] and "Gutenberg" not in r["input"] and "\ufffd" not in r["input"]


def test_babi_files_as_fact_source(babi_dir):
    records = generate("qa3", "1k", 3, seed=0, babi_dir=babi_dir)
    assert [r["facts_source"] for r in records] == ["babi:test"] * 3
    assert records[0]["question"] == "Where was the apple before the bathroom?" and records[0]["target"] == "office"
    with pytest.raises(ValueError, match="has 1000 questions"):
        next(iter_records("qa1", "0k", 1001, babi_dir=babi_dir))


def test_no_length_tell_option_overlaps_fact_lengths(background_dir):
    import random

    from rmt.babilong.background import get_background
    from rmt.babilong.haystack import clause_pieces, fill_background

    counter = get_counter("pretokens")
    fact_lengths = [n for r in generate("qa1", "0k", 20, seed=0) for n in counter.count(r["facts"])]
    lo, hi = min(fact_lengths), max(fact_lengths)

    def share_like_facts(stream, min_tokens):
        pieces, counts = fill_background(stream, counter, 5000, min_tokens)
        return sum(lo <= n <= hi for n in counts) / len(counts)

    books = get_background(background_dir)
    default = share_like_facts(books.sentences(random.Random(0)), 10)  # the reference's filter
    blended = share_like_facts(clause_pieces(books.sentences(random.Random(0)), random.Random(1)), 3)
    assert hi < 10 and default == 0  # by default no background sentence is as short as a fact
    assert blended > 0.1  # ~1 in 7 background pieces is fact-sized: length alone no longer finds facts
    # the option is wired into generate and changes only the background
    a = generate("qa1", "2k", 1, seed=0, background=background_dir)[0]
    b = generate("qa1", "2k", 1, seed=0, background=background_dir, no_length_tell=True)[0]
    assert a["facts"] == b["facts"] and a["input"] != b["input"]


def test_rmt_babilong_imports_no_torch():
    code = ("import sys; from rmt.babilong import generate, score; from rmt.babilong import prompts, io;"
            "generate('qa1', '1k', 1); assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("kwargs, match", [
    (dict(task="qa21"), "qa21"),
    (dict(length="12q"), "12q"),
    (dict(samples=0), "samples"),
    (dict(samples=-2), "samples"),
    (dict(tokenizer="no-such/tokenizer-xyz"), "cannot be loaded offline"),
])
def test_bad_arguments_one_line_errors(kwargs, match):
    args = dict(task="qa1", length="1k", samples=1) | kwargs
    with pytest.raises(ValueError, match=match) as info:
        generate(**args)
    assert "\n" not in str(info.value)


def test_background_dir_errors(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        generate("qa1", "1k", 1, background=tmp_path / "missing")
    with pytest.raises(ValueError, match="no non-empty"):
        generate("qa1", "1k", 1, background=tmp_path)


def test_default_tokenizer_is_gpt2_when_found_offline(bpe_tokenizer_file, monkeypatch):
    from rmt.babilong.tokens import PRETOKENS

    monkeypatch.setenv("RMT_GPT2_TOKENIZER", str(bpe_tokenizer_file))  # stands in for a GPT-2 dir/file
    assert get_counter(None).name == str(bpe_tokenizer_file)
    monkeypatch.setenv("RMT_GPT2_TOKENIZER", "/nonexistent/gpt2")
    import rmt.babilong.tokens as tokens

    monkeypatch.setattr(tokens, "SHARED_GPT2", bpe_tokenizer_file.parent / "absent")
    monkeypatch.setattr(tokens, "_cached_hub", lambda name: None)
    assert get_counter(None).name == PRETOKENS  # documented fallback


@pytest.mark.parametrize("background", ["fallback", "books"])
def test_a_record_never_exceeds_its_length_a_story_too_long_is_shortened(request, bpe_tokenizer_file, background):
    """Issue 17: qa1 records asked for 52 tokens came out at 66-70 tokens (10 facts, never cut)."""
    counter = get_counter(str(bpe_tokenizer_file))
    bg = request.getfixturevalue("background_dir") if background == "books" else None
    full = generate("qa1", "0k", 60, seed=4, tokenizer=counter)
    records = generate("qa1", 52, 60, seed=4, background=bg, tokenizer=counter)
    shortened = 0
    for whole, r in zip(full, records):
        assert r["n_tokens"] == counter(r["input"]) <= 52
        assert SOLVERS["qa1"](r["facts"], r["question"]) == r["target"]
        if counter(whole["input"]) <= 52:
            assert r["facts"] == whole["facts"]  # a story that fits is the same at every length
        else:
            shortened += 1
            assert len(r["facts"]) < len(whole["facts"]) and len(r["facts"]) >= 2
    assert shortened >= 5  # the case under test happened
    assert _dump(records) == _dump(generate("qa1", 52, 60, seed=4, background=bg, tokenizer=counter))


def test_a_story_that_cannot_be_shortened_is_one_error(babi_dir):
    from rmt.babilong.haystack import FactsTooLong

    with pytest.raises(FactsTooLong, match=r"qa3 sample 0: its \d+ facts alone are \d+ tokens \(pretokens\), more "
                                           r"than the 40 of length 40 \(a bAbI file's story is not shortened\)"):
        generate("qa3", 40, 1, babi_dir=babi_dir, tokenizer="pretokens")
    with pytest.raises(FactsTooLong, match=r"qa15 always has 8 facts\); ask for a longer length$"):
        generate("qa15", 20, 1, tokenizer="pretokens")
    with pytest.raises(FactsTooLong, match=r"ask for a longer length or fewer facts \(--n-facts\)$"):
        generate("qa2", 30, 1, tokenizer="pretokens", n_facts=(8, 9))


def test_a_prompt_allowance_that_leaves_no_room_is_refused_up_front():
    with pytest.raises(ValueError, match="length 100 is 100 tokens and the prompt allowance 300 leaves none"):
        iter_records("qa1", [100], 1, prompt_allowance=300)


def test_overlong_keep_gives_the_story_alone_where_none_fits():
    """What training asks (segments smaller than one fact): the story as at length 0, longer than asked."""
    with pytest.raises(ValueError, match="fewer facts"):
        generate("qa1", 4, 3, seed=1, tokenizer="pretokens", n_facts=(1, 2))
    kept = generate("qa1", 4, 3, seed=1, tokenizer="pretokens", n_facts=(1, 2), overlong="keep")
    alone = generate("qa1", "0k", 3, seed=1, tokenizer="pretokens", n_facts=(1, 2))
    assert [(r["input"], r["n_tokens"]) for r in kept] == [(r["input"], r["n_tokens"]) for r in alone]
    assert all(r["n_tokens"] > 4 for r in kept)
    with pytest.raises(ValueError, match="overlong must be 'error' or 'keep'"):
        generate("qa1", 4, 1, overlong="cut")
