"""Generator speed and length precision, side by side in one run.

Run: python bench/generate.py [--background DIR] [--official DIR] [--samples N] [--ten-million]

Prints, on this machine and in one process:

1. splitters: MB/s of our sentence splitter (sentencex, with bounded chunks and sentences) and of
   pysbd (the splitter before it) on the same paragraphs, plus any of blingfire / NLTK Punkt
   (untrained, as the official code uses it) / segtok that happen to be installed;
2. cold start: one 1M-token sample from books never split before (the split, the counter and the
   haystack included), the split alone, and a warm 1M sample;
3. input shapes: the same books without paragraph breaks, as one giant line, and with no sentence
   ends at all: seconds per 1M tokens from cold;
4. length precision (GPT-2 tokens when found offline): our haystack vs the rule before it (whole
   sentences, nearest sentence end) on the same sentence streams;
5. with ``--official DIR`` (a checkout of the official BABILong code, never part of this repo; needs
   nltk, pandas, numpy, torch): the official sampler on the same books, tokenizer and budget, its 1M
   sample interleaved with our cold one;
6. the streaming haystack vs a naive one that re-tokenizes the growing text, and 1M-token samples
   of the built-in fallback text.

Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rmt.babilong import generate  # noqa: E402
from rmt.babilong import background as bg  # noqa: E402
from rmt.babilong.background import BooksDir, FallbackText, decode_book, strip_gutenberg  # noqa: E402
from rmt.babilong.haystack import SEPARATOR, build_haystack, tolerance_of  # noqa: E402
from rmt.babilong.tokens import default_gpt2, from_tokenizers  # noqa: E402
from rmt.babilong.worlds import simulate  # noqa: E402

ONE_M = 1_000_000
ALLOWANCE = 300  # the reference's prompt allowance: a "1M" sample's input is 999,700 tokens


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def bpe_counter():
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


def book_texts(books_dir: Path) -> list[str]:
    return [strip_gutenberg(decode_book(p.read_bytes(), p.name)) for p in sorted(books_dir.glob("*.txt"))]


def paragraphs_of(texts: list[str]) -> list[str]:
    return [" ".join(p.split()) for t in texts for p in bg._PARAGRAPH_BREAK.split(t) if p.strip()]


# ------------------------------------------------------------------------------------------ 1) splitters
def splitter_speeds(paragraphs: list[str]) -> dict:
    """MB/s of each splitter on the same paragraphs (every 8th of the corpus: ~0.9 MB)."""
    sample = paragraphs[::8]
    mb = sum(map(len, sample)) / 1e6
    splitters = {"ours (sentencex, bounded)": bg.sentence_spans}
    import pysbd

    seg = pysbd.Segmenter(language="en", clean=False)
    splitters["pysbd (before)"] = lambda p: seg.processor(p).process()
    try:
        import blingfire

        splitters["blingfire"] = blingfire.text_to_sentences
    except ImportError:
        pass
    try:
        import nltk

        splitters["nltk punkt (untrained, as official)"] = nltk.PunktSentenceTokenizer().tokenize
    except ImportError:
        pass
    try:
        from segtok.segmenter import split_single

        splitters["segtok"] = split_single
    except ImportError:
        pass
    speeds = {}
    for name, split in splitters.items():
        _, seconds = timed(lambda: [split(p) for p in sample])
        speeds[name] = round(mb / seconds, 2)
        print(f"  {name:38s} {mb / seconds:7.2f} MB/s", flush=True)
    return {"sample_mb": round(mb, 2), "mb_per_s": speeds,
            "ours_vs_pysbd": round(speeds["ours (sentencex, bounded)"] / speeds["pysbd (before)"], 1)}


# -------------------------------------------------------------------------------------- 2, 3) cold start
def cold_sample(books_dir: Path, length="1M", seed=0) -> tuple[dict, float]:
    """One sample from books never split in this process; the counter is built inside (GPT-2 found offline)."""
    bg._BOOKS.clear()
    (record,), seconds = timed(lambda: generate("qa1", length, 1, seed=seed, background=books_dir))
    return record, seconds


def shapes(texts: list[str], root: Path) -> dict[str, Path]:
    """The same books as three awkward input shapes, each a books dir."""
    dirs = {name: root / name for name in ("no paragraph breaks", "one giant line", "no sentence ends")}
    for d in dirs.values():
        d.mkdir()
    for i, text in enumerate(texts):
        (dirs["no paragraph breaks"] / f"{i}.txt").write_text("\n".join(l for l in text.splitlines() if l.strip()))
        (dirs["one giant line"] / f"{i}.txt").write_text(" ".join(text.split()))
        (dirs["no sentence ends"] / f"{i}.txt").write_text(" ".join(w.strip(".!?;:") for w in text.split()))
    return dirs


# ---------------------------------------------------------------------------------------- 4) precision
def before_rule(sentences, counter, budget, min_tokens=10) -> int:
    """Tokens the rule before this one took: whole sentences, stopping at the sentence that crosses
    the budget and keeping it only when that lands closer (as rmt 0.1 did)."""
    total = 0
    for sentence in sentences:
        n = counter.count([SEPARATOR + sentence])[0]
        if n < min_tokens:
            continue
        if total + n > budget:
            return total + n if total + n - budget < budget - total else total
        total += n
        if total == budget:
            return total


def precision(books: BooksDir, counter, lengths, samples) -> dict:
    out = {}
    for name, target in lengths:
        budget = target - ALLOWANCE
        ours, before, cuts = [], [], 0
        for i in range(samples):
            facts = simulate("qa1", random.Random(f"facts:{i}")).facts
            fact_tokens = sum(counter.count([SEPARATOR + f for f in facts]))
            rng = random.Random(f"{name}:{i}")
            hay = build_haystack(facts, books.sentences(rng), counter, budget, rng)
            ours.append(hay["n_tokens"] - budget)
            cuts += hay["background_cut"]
            old = before_rule(books.sentences(random.Random(f"{name}:{i}")), counter, budget - fact_tokens)
            before.append(old + fact_tokens - budget)
        row = {}
        for rule, miss in (("ours", ours), ("before", before)):
            row[rule] = {"mean_abs": round(statistics.mean(map(abs, miss)), 1), "max_over": max(max(miss), 0),
                         "max_under": min(min(miss), 0),
                         "within_1pct": sum(abs(m) <= tolerance_of(budget) and m <= 0 for m in miss) / len(miss)}
        row["ours"]["samples_with_a_cut_sentence"] = cuts / samples
        out[name] = row
        print(f"  {name:>4} (input {budget} tokens, {samples} samples): "
              f"ours mean |miss| {row['ours']['mean_abs']:5.1f}, range [{row['ours']['max_under']}, +{row['ours']['max_over']}], "
              f"within 1% below {row['ours']['within_1pct']:.0%}, a cut sentence in {cuts}/{samples} | "
              f"before: mean {row['before']['mean_abs']:5.1f}, range [{row['before']['max_under']}, +{row['before']['max_over']}]",
              flush=True)
    return out


# ------------------------------------------------------------------------------------- 6) ours vs naive
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


# ------------------------------------------------------------------------------------------ 5) official
def official(official_dir: Path, texts: list[str], babi_dir: Path, books_dir: Path, budgets: list[int],
             samples: int, rounds: int = 3) -> dict:
    """The official sampler (SentenceSampler + NoiseInjectionDataset) on the same books and budget,
    its 1M sample interleaved with our cold 1M sample (``rounds`` times each: the ratio is the median)."""
    sys.path.insert(0, str(official_dir))
    from babilong.babilong_utils import NoiseInjectionDataset, SentenceSampler
    from transformers import GPT2TokenizerFast

    from rmt.babilong.babi import load_babi

    gpt2 = REPO.parent / "shared" / "data" / "tokenizers" / "gpt2"
    tokenizer = GPT2TokenizerFast.from_pretrained(str(gpt2))  # (the vocab_file= constructor yields no tokens in transformers 5)
    tokenizer.model_max_length = 10**9  # counting only: no "longer than 1024" warnings
    # Facts in the official sample shape (its TaskDataset's bAbI parser fails under pandas 3; facts
    # are not what is timed here).
    task = [{"facts": q.facts, "question": q.question, "answer": q.answer} for q in load_babi("qa1", "test", babi_dir)]
    dataset = [{"text": t} for t in texts]

    def one(sample_size, seed):  # (seed 0 would leave NoiseInjectionDataset without an rng)
        sampler = SentenceSampler(dataset, tokenizer=tokenizer, shuffle=True, random_seed=seed)
        data = NoiseInjectionDataset(task, sampler, tokenizer, sample_size=sample_size, random_seed=seed)
        return data[0]

    theirs, ours = [], []
    for r in range(rounds):
        sample, seconds = timed(lambda: one(ONE_M - ALLOWANCE, 42 + r))
        theirs.append(seconds)
        ours.append(cold_sample(books_dir, seed=r)[1])
        print(f"  round {r + 1}: official 1M sample {theirs[-1]:.2f}s ({len(sample['input_tokens'])} tokens), "
              f"ours cold {ours[-1]:.2f}s", flush=True)
    ratio = statistics.median(t / o for t, o in zip(theirs, ours))
    result = {"1M_s": [round(t, 2) for t in theirs], "ours_cold_1M_s": [round(o, 2) for o in ours],
              "official_over_ours_cold_1M": round(ratio, 2)}
    print(f"  official / ours, cold 1M sample (median of {rounds} interleaved rounds): {ratio:.2f}x", flush=True)
    misses = []
    for budget in budgets:
        for seed in range(1, samples + 1):
            ids = one(budget, seed)["input_tokens"]
            text = tokenizer.decode(ids)  # what a dataset stores; re-tokenized, the cut can shift the count
            misses.append(len(tokenizer.encode(text, add_special_tokens=False)) - budget)
    result["precision_retokenized"] = {"mean_abs": round(statistics.mean(map(abs, misses)), 1),
                                       "max_over": max(max(misses), 0), "max_under": min(min(misses), 0)}
    print(f"  official precision (decoded and re-tokenized, {len(misses)} samples at {budgets} tokens): "
          f"{result['precision_retokenized']}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--background", default=str(REPO.parent / "shared" / "data" / "background"))
    parser.add_argument("--babi", default=str(REPO.parent / "shared" / "data" / "babi" / "en"))
    parser.add_argument("--official", default=None, help="a checkout of the official BABILong code, to compare with")
    parser.add_argument("--samples", type=int, default=30, help="samples per length for the precision table")
    parser.add_argument("--ten-million", action="store_true", help="also time one 10M-token sample (fallback text, pre-tokens)")
    args = parser.parse_args()
    counter, raw_bpe = bpe_counter()
    results = {"cpus": os.cpu_count(), "load_1m": round(os.getloadavg()[0], 2), "tokenizer": counter.name}
    print(f"cpus: {os.cpu_count()}, load average (1 min): {os.getloadavg()[0]:.2f}, tokenizer: {counter.name}", flush=True)
    books_dir = Path(args.background)

    if books_dir.is_dir():
        texts = book_texts(books_dir)
        print(f"books: {books_dir} ({len(texts)} books, {sum(map(len, texts)) / 1e6:.1f} M characters)")
        print("1) sentence splitters, same paragraphs:", flush=True)
        results["splitters"] = splitter_speeds(paragraphs_of(texts))

        print("2) one 1M-token sample from books never split before (tokenizer load, split, haystack):", flush=True)
        record, cold = cold_sample(books_dir)
        bg._BOOKS.clear()
        _, split_all = timed(lambda: BooksDir(books_dir).prepare(progress=False))
        (_,), warm = timed(lambda: generate("qa1", "1M", 1, seed=1, background=books_dir, tokenizer=counter))
        results["cold_1M_s"] = round(cold, 2)
        results["split_all_books_s"] = round(split_all, 2)
        results["warm_1M_s"] = round(warm, 2)
        print(f"  cold {cold:.2f}s ({record['n_tokens']} tokens); splitting all books alone {split_all:.2f}s; "
              f"warm {warm:.2f}s", flush=True)

        print("3) input shapes, one 1M-token sample each from cold:", flush=True)
        results["shapes_s_per_1M"] = {}
        with tempfile.TemporaryDirectory() as tmp:
            for name, d in shapes(texts, Path(tmp)).items():
                rec, seconds = cold_sample(d)
                per_1m = seconds * ONE_M / rec["n_tokens"]
                results["shapes_s_per_1M"][name] = round(per_1m, 2)
                print(f"  {name:22s} {per_1m:.2f} s per 1M tokens", flush=True)
        bg._BOOKS.clear()

        print("4) length precision (input tokens vs target - 300), same sentence streams:", flush=True)
        lengths = [("1k", 1000), ("4k", 4000), ("16k", 16000), ("64k", 64000)]
        results["precision"] = precision(BooksDir(books_dir), counter, lengths, args.samples)

        if args.official:
            print("5) the official code on the same books and tokenizer:", flush=True)
            results["official"] = official(Path(args.official), texts, Path(args.babi), books_dir, [700, 3700, 15700], 10)

    print("6) streaming haystack vs naive re-tokenizing, fallback text:", flush=True)
    if raw_bpe is not None:
        encode = lambda t: raw_bpe.encode(t, add_special_tokens=False).ids  # noqa: E731
    else:
        encode = lambda t: [0] * counter(t)  # noqa: E731
    facts = simulate("qa1", random.Random(0)).facts
    compare = []
    for tokens in (2000, 4000, 8000):
        _, ours = timed(lambda: generate("qa1", tokens, 1, seed=0, tokenizer=counter))
        _, naive = timed(lambda: naive_sample(facts, FallbackText().sentences(random.Random(0)), encode, tokens,
                                              random.Random(0)))
        compare.append({"tokens": tokens, "ours_s": round(ours, 4), "naive_s": round(naive, 4),
                        "speedup": round(naive / ours, 1)})
        print(f"  {tokens:>7} tokens: ours {ours:.3f}s  naive {naive:.3f}s  ({naive / ours:.0f}x)", flush=True)
    results["ours_vs_naive"] = compare
    (rec,), t_bpe = timed(lambda: generate("qa1", "1M", 1, seed=0, tokenizer=counter))
    (_,), t_pre = timed(lambda: generate("qa1", "1M", 1, seed=0, tokenizer="pretokens"))
    results["1M_fallback_bpe_s"] = round(t_bpe, 2)
    results["1M_fallback_pretokens_s"] = round(t_pre, 2)
    print(f"  1M sample, fallback text: {counter.name} {t_bpe:.2f}s, pretokens {t_pre:.2f}s", flush=True)
    if args.ten_million:
        (rec,), t10 = timed(lambda: generate("qa1", "10M", 1, seed=0, tokenizer="pretokens"))
        results["10M_fallback_pretokens_s"] = round(t10, 1)
        print(f"  10M sample, fallback text, pretokens: {t10:.1f}s ({rec['n_tokens']} tokens)")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
