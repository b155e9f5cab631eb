"""``generate``: BABILong records from facts (simulator or bAbI files) + background + haystack."""

from __future__ import annotations

import os
import random
from typing import Iterator

from rmt.babilong.background import BooksDir, get_background
from rmt.babilong.babi import load_babi
from rmt.babilong.haystack import FactsTooLong, build_haystack, clause_pieces, facts_length, parse_length
from rmt.babilong.tasks import TASK_SPECS, check_task
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

    def fitting(self, i: int, counter, max_tokens: int, length: str, overlong: str = "error"):
        """Sample ``i``, or where its facts alone are longer than ``max_tokens`` (> 0), a shorter
        simulated story drawn from the seed (fewer facts, as many as fit): an input never exceeds
        its length. A bAbI file's story or a fixed-shape task cannot be shortened, nor can a story
        already at its fewest facts: FactsTooLong, or with ``overlong="keep"`` sample ``i`` as it is."""
        sample = self[i]
        if max_tokens <= 0 or facts_length(sample.facts, counter) <= max_tokens:
            return sample
        spec = TASK_SPECS[self.task]
        lo = spec.facts[0] if self.n_facts is None else self.n_facts if isinstance(self.n_facts, int) else self.n_facts[0]
        lo = max(lo, spec.min_facts)
        n_tokens = facts_length(sample.facts, counter)
        shortenable = self.babi is None and not spec.fixed_shape
        if shortenable:
            # Start near the count that fits (tokens per fact vary little), then one fact fewer at a time.
            for cap in range(min(len(sample.facts) - 1, len(sample.facts) * max_tokens // n_tokens + 1), lo - 1, -1):
                try:
                    shorter = simulate(self.task, _rng(self.seed, self.task, i, "facts", f"at most {cap}"), (lo, cap))
                except ValueError:  # no story of so few facts can pose the question
                    break
                if facts_length(shorter.facts, counter) <= max_tokens:
                    return shorter
        if overlong == "keep":
            return sample
        why = (f"no story of {lo} or more facts fits" if shortenable else
               "a bAbI file's story is not shortened" if self.babi is not None else
               f"{self.task} always has {spec.fixed_shape}")
        raise FactsTooLong(f"{self.task} sample {i}: its {len(sample.facts)} facts alone are {n_tokens} tokens "
                           f"({counter.name}), more than the {max_tokens} of length {length} ({why}); ask for a "
                           f"longer length" + (" or fewer facts (--n-facts)" if shortenable else ""))


def iter_records(tasks, lengths, samples: int, seed: int = 0, background=None, tokenizer=None, *,
                 babi_dir=None, split: str = "test", n_facts=None, prompt_allowance: int | None = None,
                 min_sentence_tokens: int = 10, no_length_tell: bool = False, skip: int = 0,
                 overlong: str = "error") -> Iterator[dict]:
    """Records for every task x length x sample, validated up front (errors before any work).

    Sample ``i`` has the same facts at every length (as in the public dataset) where they fit; the
    background depends on the length too. An input is never longer than its length (minus the
    prompt allowance): a simulated story too long for it is redrawn shorter from the seed; one that
    cannot be (a bAbI file's, a fixed-shape task's, one at its fewest facts) raises FactsTooLong, or
    with ``overlong="keep"`` is the input alone, longer than asked (``n_tokens`` says by how much). Each record depends only on the seed and its own (task, length,
    sample), so ``skip=k`` starts at the k-th record without building the ones before it (how a
    killed ``rmt generate`` resumes), and what follows is the same as in a full run.
    """
    tasks, lengths, _ = unique_tasks_and_lengths(tasks, lengths)  # a duplicate would repeat its records
    samples = check_samples(samples)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise UsageError(f"seed must be an integer, got {seed!r}")
    if babi_dir is not None and not os.path.isdir(babi_dir):
        raise UsageError(f"bAbI dir not found: {babi_dir}")
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
    for name, tokens in lengths:
        allowance = _allowance(name, prompt_allowance)
        if 0 < tokens <= allowance:  # no room left for the input itself
            raise UsageError(f"length {name} is {tokens} tokens and the prompt allowance {allowance} leaves none for "
                             f"the input; give a length above {allowance} tokens or a smaller prompt allowance")
    if isinstance(skip, bool) or not isinstance(skip, int) or skip < 0:
        raise UsageError(f"skip must be an integer >= 0, got {skip!r}")
    if overlong not in ("error", "keep"):
        raise UsageError(f"overlong must be 'error' or 'keep', got {overlong!r}")
    min_tokens = 3 if no_length_tell else min_sentence_tokens
    # Validation is done: the records themselves are produced lazily.
    return _records(tasks, lengths, samples, seed, source, counter, fact_sources, prompt_allowance,
                    min_tokens, no_length_tell, skip, overlong)


def _records(tasks, lengths, samples, seed, source, counter, fact_sources, prompt_allowance, min_tokens,
             no_length_tell, skip=0, overlong="error") -> Iterator[dict]:
    max_tokens = None
    index = -1
    for task in tasks:
        facts_of = fact_sources[task]
        for name, tokens in lengths:
            allowance = _allowance(name, prompt_allowance)
            for i in range(samples):
                index += 1
                if index < skip:
                    continue
                target = tokens - allowance if tokens else 0
                sample = facts_of.fitting(i, counter, target, name, overlong)
                rng = _rng(seed, task, name, i, "haystack")
                stream = None
                if target and facts_length(sample.facts, counter) > target:  # overlong="keep": the facts alone
                    target = 0
                elif tokens > 0:
                    stream = source.sentences(rng)
                    if no_length_tell:
                        stream = clause_pieces(stream, rng)
                hay = build_haystack(sample.facts, stream, counter, target, rng, min_tokens, max_tokens)
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


def unique_tasks_and_lengths(tasks, lengths) -> tuple[list[str], list[tuple[str, int]], list[str]]:
    """Tasks as canonical names and lengths as (name, tokens), each once, in first-seen order, and a
    note per merged duplicate: ``qa1,QA1,1`` is one task; ``4k,4K`` and ``1M,1000k`` one length each
    (the same tokens and prompt allowance give the same records); ``4k,4000`` stay two (a named length
    leaves a prompt allowance, a token count none). Raises on an unknown task or length."""
    notes = []

    def once(items, what, key):
        kept: dict = {}
        for raw, value in items:
            if key(value) in kept:
                first_raw, first = kept[key(value)]
                name = first[0] if what == "length" else first
                notes.append(f"{what}s {first_raw} and {raw} are the same: generated once, as {name}")
            else:
                kept[key(value)] = (raw, value)
        return [value for _, value in kept.values()]

    tasks = once([(t, check_task(t)) for t in ([tasks] if isinstance(tasks, str) else tasks)], "task", lambda v: v)
    lengths = once([(x, parse_length(x)) for x in ([lengths] if isinstance(lengths, (str, int)) else lengths)],
                   "length", lambda v: (v[1], v[0].isdigit()))
    return tasks, lengths, notes


def _allowance(name: str, prompt_allowance: int | None) -> int:
    """Tokens left for the prompt: as given, else the reference's for named lengths, 0 for token counts."""
    if prompt_allowance is not None:
        return prompt_allowance
    return REFERENCE_PROMPT_ALLOWANCE if not name.isdigit() else 0


def generate(task: str = "qa1", length="0k", samples: int = 10, seed: int = 0, background=None, tokenizer=None,
             **options) -> list[dict]:
    """BABILong records for one task at one length (see ``iter_records`` for the options)."""
    return list(iter_records(task, [length], samples, seed, background, tokenizer, **options))
