"""``generate``: BABILong records from facts (simulator or bAbI files) + background + haystack."""

from __future__ import annotations

import os
import random
from typing import Iterator

from rmt.babilong.background import BooksDir, get_background
from rmt.babilong.babi import load_babi
from rmt.babilong.haystack import build_haystack, clause_pieces, parse_length
from rmt.babilong.tasks import check_task
from rmt.babilong.tokens import get_counter
from rmt.babilong.worlds import SIMULATORS, simulate
from rmt.errors import UsageError

REFERENCE_PROMPT_ALLOWANCE = 300
PREPARE_BOOKS_FROM = 256_000  # target tokens from which a books dir is sentence-split up front  # tokens the reference leaves for the prompt around the input


def _rng(*parts) -> random.Random:
    # String seeds are hashed with SHA-512 by ``random``: stable across runs, machines and versions.
    return random.Random(":".join(str(p) for p in parts))


def check_samples(samples) -> int:
    if isinstance(samples, bool) or not isinstance(samples, int) or samples <= 0:
        raise UsageError(f"samples must be a positive integer, got {samples!r}")
    return samples


class FactSource:
    """Facts for sample ``i`` of a task: simulated from the seed, or the i-th question of a bAbI file."""

    def __init__(self, task: str, seed: int, babi_dir=None, split: str = "test", n_facts=None):
        self.task, self.seed, self.n_facts = task, seed, n_facts
        self.babi = None
        if babi_dir is not None:
            self.babi = load_babi(task, split, babi_dir)
            self.name = f"babi:{split}"
        elif task not in SIMULATORS:
            raise UsageError(f"task {task} has no simulator yet; simulated: {', '.join(SIMULATORS)} "
                             f"(pass babi_dir=... to use the bAbI files)")
        else:
            self.name = "simulator"

    def check_count(self, samples: int) -> None:
        if self.babi is not None and samples > len(self.babi):
            raise UsageError(f"samples={samples} but the bAbI file of {self.task} has {len(self.babi)} questions")

    def __getitem__(self, i: int):
        if self.babi is not None:
            return self.babi[i]
        return simulate(self.task, _rng(self.seed, self.task, i, "facts"), self.n_facts)


def iter_records(tasks, lengths, samples: int, seed: int = 0, background=None, tokenizer=None, *,
                 babi_dir=None, split: str = "test", n_facts=None, prompt_allowance: int | None = None,
                 min_sentence_tokens: int = 10, no_length_tell: bool = False, skip: int = 0) -> Iterator[dict]:
    """Records for every task x length x sample, validated up front (errors before any work).

    Sample ``i`` has the same facts at every length (as in the public dataset); the background
    depends on the length too. Each record depends only on the seed and its own (task, length,
    sample), so ``skip=k`` starts at the k-th record without building the ones before it (how a
    killed ``rmt generate`` resumes), and what follows is the same as in a full run.
    """
    tasks = [check_task(t) for t in ([tasks] if isinstance(tasks, str) else tasks)]
    lengths = [parse_length(x) for x in ([lengths] if isinstance(lengths, (str, int)) else lengths)]
    samples = check_samples(samples)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise UsageError(f"seed must be an integer, got {seed!r}")
    if babi_dir is not None and not os.path.isdir(babi_dir):
        raise FileNotFoundError(f"bAbI dir not found: {babi_dir}")
    needs_background = any(tokens > 0 for _, tokens in lengths)
    source = get_background(background) if needs_background else None
    if isinstance(source, BooksDir) and max(tokens for _, tokens in lengths) >= PREPARE_BOOKS_FROM:
        source.prepare()  # long samples read most books anyway: split them all up front, with a progress bar
    counter = get_counter(tokenizer)
    fact_sources = {t: FactSource(t, seed, babi_dir, split, n_facts) for t in tasks}
    for fs in fact_sources.values():
        fs.check_count(samples)
    if isinstance(min_sentence_tokens, bool) or not isinstance(min_sentence_tokens, int) or min_sentence_tokens < 0:
        raise UsageError(f"min_sentence_tokens must be an integer >= 0, got {min_sentence_tokens!r}")
    if prompt_allowance is not None and (not isinstance(prompt_allowance, int) or prompt_allowance < 0):
        raise UsageError(f"prompt_allowance must be an integer >= 0, got {prompt_allowance!r}")
    if isinstance(skip, bool) or not isinstance(skip, int) or skip < 0:
        raise UsageError(f"skip must be an integer >= 0, got {skip!r}")
    min_tokens = 3 if no_length_tell else min_sentence_tokens
    # Validation is done: the records themselves are produced lazily.
    return _records(tasks, lengths, samples, seed, source, counter, fact_sources, prompt_allowance,
                    min_tokens, no_length_tell, skip)


def _records(tasks, lengths, samples, seed, source, counter, fact_sources, prompt_allowance, min_tokens,
             no_length_tell, skip=0) -> Iterator[dict]:
    max_tokens = None
    index = -1
    for task in tasks:
        facts_of = fact_sources[task]
        for name, tokens in lengths:
            allowance = prompt_allowance
            if allowance is None:
                allowance = REFERENCE_PROMPT_ALLOWANCE if not name.isdigit() else 0
            for i in range(samples):
                index += 1
                if index < skip:
                    continue
                sample = facts_of[i]
                rng = _rng(seed, task, name, i, "haystack")
                stream = None
                if tokens > 0:
                    stream = source.sentences(rng)
                    if no_length_tell:
                        stream = clause_pieces(stream, rng)
                hay = build_haystack(sample.facts, stream, counter, max(0, tokens - allowance) if tokens else 0,
                                     rng, min_tokens, max_tokens)
                yield {
                    "input": hay["input"],
                    "question": sample.question,
                    "target": sample.answer,
                    "task": task,
                    "length": name,
                    "target_tokens": tokens,
                    "n_tokens": hay["n_tokens"],
                    "seed": seed,
                    "sample": i,
                    "facts": sample.facts,
                    "supporting": sample.supporting,
                    "fact_offsets": hay["fact_offsets"],
                    "supporting_offsets": [hay["fact_offsets"][j] for j in sample.supporting],
                    "facts_source": facts_of.name,
                    "background": source.name if source is not None else "none",
                    "tokenizer": counter.name,
                    "prompt_allowance": allowance if tokens else 0,
                }


def generate(task: str = "qa1", length="0k", samples: int = 10, seed: int = 0, background=None, tokenizer=None,
             **options) -> list[dict]:
    """BABILong records for one task at one length (see ``iter_records`` for the options)."""
    return list(iter_records(task, [length], samples, seed, background, tokenizer, **options))
