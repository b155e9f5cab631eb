"""Haystack speed: our streaming generator vs a naive one that re-tokenizes the growing text.

Run: python bench/generate.py [--background DIR] [--ten-million]

Measures, in one run and on this machine: haystack tokens/s and the time of one 1M-token sample
(fallback background; and books, cold = splitting the corpus into sentences once, then warm), both
with a byte-level BPE tokenizer (GPT-2 itself when it can be found offline, else one trained here
in seconds) and with the built-in pre-token counter; the naive baseline only at small lengths,
because it is quadratic (each added sentence re-tokenizes all text so far). Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rmt.babilong import generate  # noqa: E402
from rmt.babilong.background import BooksDir, FallbackText  # noqa: E402
from rmt.babilong.tokens import default_gpt2, from_tokenizers, get_counter  # noqa: E402
from rmt.babilong.worlds import simulate  # noqa: E402


def bpe_tokenizer():
    """GPT-2 if available offline; otherwise a byte-level BPE (GPT-2's algorithm) trained now."""
    gpt2 = default_gpt2()
    if gpt2 is not None:
        return gpt2, None
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    rng = random.Random(0)
    text = [FallbackText().sentence(rng) for _ in range(5000)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(text, trainers.BpeTrainer(vocab_size=2000, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return from_tokenizers(tok, "bpe-2000 (trained in bench)"), tok


def naive_sample(facts, sentences, encode, budget, rng):
    """The naive way: append a sentence, re-tokenize the whole text, stop past the budget."""
    text, n = "", 0
    while n < budget:
        candidate = (text + " " + next(sentences)).strip()
        n = len(encode(candidate))
        text = candidate
    pieces = text.split(". ")
    for fact in facts:  # facts at random places (not what is timed: the loop above dominates)
        pieces.insert(rng.randrange(len(pieces) + 1), fact)
    return ". ".join(pieces), n


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--background", default=str(REPO.parent / "shared" / "data" / "background"))
    parser.add_argument("--ten-million", action="store_true", help="also time one 10M-token sample (fallback text, pre-tokens)")
    args = parser.parse_args()
    counter, raw_bpe = bpe_tokenizer()
    print(f"cpus: {os.cpu_count()}, tokenizer: {counter.name}", flush=True)
    results = {"cpus": os.cpu_count(), "tokenizer": counter.name}

    # 1) ours vs naive at small lengths, same tokenizer and sentence source
    if raw_bpe is not None:
        encode = lambda t: raw_bpe.encode(t, add_special_tokens=False).ids  # noqa: E731
    else:
        encode = lambda t: counter.count([t]) * [0]  # noqa: E731
    facts = simulate("qa1", random.Random(0)).facts
    compare = []
    for tokens in (2000, 4000, 8000):
        (rec,), ours = timed(lambda: generate("qa1", tokens, 1, seed=0, tokenizer=counter))
        (_, n), naive = timed(lambda: naive_sample(facts, FallbackText().sentences(random.Random(0)), encode, tokens, random.Random(0)))
        compare.append({"tokens": tokens, "ours_s": round(ours, 4), "naive_s": round(naive, 4),
                        "speedup": round(naive / ours, 1)})
        print(f"{tokens:>7} tokens: ours {ours:.3f}s  naive {naive:.3f}s  ({naive / ours:.0f}x)", flush=True)
    results["ours_vs_naive"] = compare

    # 2) one 1M-token sample, fallback background
    (rec,), t_bpe = timed(lambda: generate("qa1", "1M", 1, seed=0, tokenizer=counter))
    results["1M_fallback_bpe_s"] = round(t_bpe, 2)
    results["1M_fallback_bpe_tokens_per_s"] = int(rec["n_tokens"] / t_bpe)
    print(f"1M sample, fallback text, {counter.name}: {t_bpe:.2f}s ({rec['n_tokens']} tokens)", flush=True)
    (rec,), t_pre = timed(lambda: generate("qa1", "1M", 1, seed=0, tokenizer="pretokens"))
    results["1M_fallback_pretokens_s"] = round(t_pre, 2)
    print(f"1M sample, fallback text, pretokens: {t_pre:.2f}s", flush=True)

    # 3) books: cold (sentence-split the corpus once, into a fresh cache) then warm samples
    if Path(args.background).is_dir():
        with tempfile.TemporaryDirectory() as cache:
            books = BooksDir(args.background, cache_dir=cache)
            n_books, t_prepare = timed(lambda: books.prepare())
            results["books_prepare_once_s"] = round(t_prepare, 1)
            print(f"books: split {n_books} books into sentences once (2 processes): {t_prepare:.1f}s", flush=True)
            (rec,), t_books = timed(lambda: generate("qa1", "1M", 1, seed=0, tokenizer=counter, background=books))
            results["1M_books_bpe_warm_s"] = round(t_books, 2)
            results["1M_books_bpe_tokens_per_s"] = int(rec["n_tokens"] / t_books)
            print(f"1M sample, books (warm), {counter.name}: {t_books:.2f}s", flush=True)
            (rec,), t_books_pre = timed(lambda: generate("qa1", "1M", 1, seed=1, tokenizer="pretokens", background=books))
            results["1M_books_pretokens_warm_s"] = round(t_books_pre, 2)
            print(f"1M sample, books (warm), pretokens: {t_books_pre:.2f}s", flush=True)

    if args.ten_million:
        (rec,), t10 = timed(lambda: generate("qa1", "10M", 1, seed=0, tokenizer="pretokens"))
        results["10M_fallback_pretokens_s"] = round(t10, 1)
        print(f"10M sample, fallback text, pretokens: {t10:.1f}s ({rec['n_tokens']} tokens, {len(rec['input'])} chars)")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
