"""Hide facts in background text at a target length measured in tokens.

Facts go between background sentences at positions drawn uniformly with replacement and then
sorted, so the facts keep their order (as in the reference generator). Each sentence is tokenized
once, as it will appear in the text (with its leading space): the text is never re-tokenized as it
grows, so the cost is linear in the length and memory beyond the sample's own text is bounded by
one batch of sentences.

The input lands at most at its target and at least 1% below it. Whole sentences are kept where they
land there; otherwise one sentence, the last background piece, is cut at a word boundary (the
reference always cuts the last sentence, in tokens, so it lands exactly but mid-word). Facts go only
at sentence boundaries: never after a cut piece, which then ends the input. Facts longer than the
target are an error (``FactsTooLong``), never an input longer than asked.
"""

from __future__ import annotations

import random
import re
from typing import Iterable, Iterator

from rmt.babilong.tokens import Counter
from rmt.errors import UsageError

LENGTH_NAMES = ["0k", "1k", "2k", "4k", "8k", "16k", "32k", "64k", "128k", "256k", "512k",
                "1M", "2M", "10M"]
_LENGTH = re.compile(r"^(\d+)([kKmM]?)$")
SEPARATOR = " "


def parse_length(length) -> tuple[str, int]:
    """``"4k"`` -> ("4k", 4000), ``"1M"`` -> ("1M", 1000000), ``8192`` -> ("8192", 8192)."""
    if isinstance(length, bool):
        raise UsageError(f"length {length!r} is not a length")
    if isinstance(length, int):
        if length < 0:
            raise UsageError(f"length must be >= 0 tokens, got {length}")
        return str(length), length
    match = _LENGTH.match(str(length).strip())
    if not match:
        raise UsageError(f"unknown length {length!r}; allowed: a token count (e.g. 8192) or a name "
                         f"like {', '.join(LENGTH_NAMES)} (k = 1000, M = 1000000)")
    number, unit = int(match.group(1)), match.group(2).lower()
    scale = {"": 1, "k": 1000, "m": 1_000_000}[unit]
    name = f"{number}{unit}" if unit == "k" else f"{number}M" if unit == "m" else str(number)
    return name, number * scale


def clause_pieces(sentences: Iterable[str], rng: random.Random, min_words: int = 4,
                  max_words: int = 14) -> Iterator[str]:
    """Cut background sentences into pieces of ``min_words``..``max_words`` words (preferring a cut
    after a comma, semicolon or colon), so background pieces are as short as facts: this removes
    the reference's "facts are the short sentences" tell. The text itself is unchanged."""
    for sentence in sentences:
        words = sentence.split()
        if len(words) <= max_words:
            yield sentence
            continue
        start = 0
        while start < len(words):
            want = rng.randint(min_words, max_words)
            end = min(len(words), start + want)
            for k in range(end, min(len(words), start + want + 4)):  # a clause end close by is nicer
                if words[k - 1][-1] in ",;:":
                    end = k
                    break
            if len(words) - end < min_words:  # no tiny leftover piece
                end = len(words)
            yield " ".join(words[start:end])
            start = end


LOOKAHEAD = 16  # sentences tried for one that lands on target whole, before a sentence is cut


def tolerance_of(target_tokens: int) -> int:
    """How far below its target a haystack may land: 1% (never above)."""
    return target_tokens // 100


def cut_to_fit(sentence: str, counter: Counter, max_tokens: int, separator: str = SEPARATOR) -> tuple[str, int]:
    """The longest word-prefix of ``sentence`` of at most ``max_tokens`` tokens (counted with
    ``separator`` in front, as in the text), and its count; ``("", 0)`` if not even one word fits.

    A binary search over the number of words (a token count grows with the words): ~log2(max_tokens)
    calls of the counter on texts of at most ``max_tokens`` words, as every word is at least one token."""
    words = sentence.split()
    lo, hi, best = 0, min(len(words), max_tokens), ("", 0)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        prefix = " ".join(words[:mid])
        n = counter.count([separator + prefix])[0]
        if n <= max_tokens:
            lo, best = mid, (prefix, n)
        else:
            hi = mid - 1
    return best


def _fill(sentences: Iterator[str], counter: Counter, budget: int, min_tokens: int, max_tokens: int | None,
          tolerance: int) -> tuple[list[str], list[int], bool]:
    chosen: list[str] = []
    counts: list[int] = []
    total = skipped = 0
    overshot = None
    mean = 25.0  # running estimate of tokens per sentence, to size the next batch
    seen_tokens = seen = 0
    while True:
        want = int((budget - total) / mean * 1.05) + 4
        batch = [next(sentences) for _ in range(min(max(want, 4), 4096))]
        batch_counts = counter.count([SEPARATOR + s for s in batch])
        for sentence, n in zip(batch, batch_counts):
            seen_tokens, seen = seen_tokens + n, seen + 1
            if n < min_tokens or (max_tokens is not None and n > max_tokens):
                continue
            gap = budget - total
            if n > gap:
                # Try a few later sentences for one that fits whole (closer, still whole sentences);
                # then stop if within tolerance, else cut the first sentence that overshot (it follows
                # the text so far) at a word boundary to fill the gap.
                overshot = overshot or sentence
                if skipped < LOOKAHEAD and gap >= max(min_tokens, 1):
                    skipped += 1
                    continue
                if gap <= tolerance:
                    return chosen, counts, False
                piece, m = cut_to_fit(overshot, counter, gap)
                if m:
                    chosen.append(piece)
                    counts.append(m)
                return chosen, counts, bool(m)
            chosen.append(sentence)
            counts.append(n)
            total += n
            if total == budget:
                return chosen, counts, False
        mean = max(1.0, seen_tokens / max(seen, 1))


def fill_background(sentences: Iterator[str], counter: Counter, budget: int, min_tokens: int = 10,
                    max_tokens: int | None = None, tolerance: int = 0) -> tuple[list[str], list[int]]:
    """Background sentences whose token counts sum to at most ``budget`` and at least
    ``budget - tolerance``, with their counts.

    Sentences shorter than ``min_tokens`` (or longer than ``max_tokens``) are skipped, as in the
    reference. Whole sentences are taken while they fit. When the next one would overshoot and the
    text is still more than ``tolerance`` short, up to ``LOOKAHEAD`` later sentences are tried whole;
    if that does not land, the first overshooting sentence is cut at a word boundary to fill the gap
    (then that last piece is the only partial sentence).
    """
    chosen, counts, _ = _fill(sentences, counter, budget, min_tokens, max_tokens, tolerance)
    return chosen, counts


class FactsTooLong(UsageError):
    """The facts alone are longer than the target: no input of that length can hold them."""


def facts_length(facts: list[str], counter: Counter) -> int:
    """Tokens of the facts alone, as the haystack lays them out (the first without a separator)."""
    if not facts:
        return 0
    return counter.count([facts[0]])[0] + sum(counter.count([SEPARATOR + f for f in facts[1:]]))


def build_haystack(facts: list[str], background: Iterator[str] | None, counter: Counter, target_tokens: int,
                   rng: random.Random, min_sentence_tokens: int = 10, max_sentence_tokens: int | None = None) -> dict:
    """The input text with ``facts`` hidden in background sentences, ``target_tokens`` long.

    ``n_tokens`` is never above a ``target_tokens`` > 0, and with background at least 99% of it
    (``tolerance_of``); facts longer than that on their own raise ``FactsTooLong`` (they are never
    cut). With ``target_tokens`` 0 the input is the facts alone, whatever their length. Facts go
    between background sentences, never after a cut one. Returns ``input``, ``n_tokens``,
    ``fact_offsets`` (the token offset where each fact starts), ``n_background_sentences`` and
    ``background_cut`` (whether the last background piece is a sentence cut to land on target).
    """
    if target_tokens > 0 and facts_length(facts, counter) > target_tokens:
        raise FactsTooLong(f"the {len(facts)} facts alone are {facts_length(facts, counter)} tokens, more than "
                           f"the {target_tokens} asked for")
    fact_counts = counter.count([SEPARATOR + f for f in facts])
    budget = target_tokens - sum(fact_counts)
    hay: list[str] = []
    hay_counts: list[int] = []
    cut = False
    if background is not None and budget > 0:
        hay, hay_counts, cut = _fill(background, counter, budget, min_sentence_tokens, max_sentence_tokens,
                                     tolerance_of(target_tokens))
    # A fact goes before background piece p (p = len(hay): at the end), never right after a cut piece:
    # facts sit between whole sentences, as in the reference generator.
    positions = sorted(rng.randrange(len(hay) + (0 if cut else 1)) for _ in facts)
    while True:
        pieces, counts, is_fact = _interleave(facts, fact_counts, hay, hay_counts, positions)
        if pieces:  # the first piece has no leading separator in the text
            counts[0] = counter.count([pieces[0]])[0]
        excess = sum(counts) - target_tokens
        if excess <= 0 or not hay:
            break
        # Rare: the first piece counts more without its separator than with it (a byte-level BPE
        # can merge " x" into one token where "x" alone is two): trim the last background piece.
        last = len(hay) - 1
        piece, n = cut_to_fit(hay[last], counter, hay_counts[last] - excess)
        if n:
            hay[last], hay_counts[last] = piece, n
        else:
            hay, hay_counts = hay[:last], hay_counts[:last]
        positions = [min(p, last) for p in positions]  # no fact after the cut piece (or past the end)
        cut = True
    offsets, total = [], 0
    for n in counts:
        offsets.append(total)
        total += n
    return {
        "input": SEPARATOR.join(pieces),
        "n_tokens": total,
        "fact_offsets": [offsets[i] for i, f in enumerate(is_fact) if f],
        "n_background_sentences": len(hay),
        "background_cut": cut,
    }


def _interleave(facts, fact_counts, hay, hay_counts, positions):
    """Facts before the background pieces at their drawn positions (facts keep their order)."""
    pieces: list[str] = []
    counts: list[int] = []
    is_fact: list[bool] = []
    h = 0
    for k, pos in enumerate(positions):
        pieces += hay[h:pos]
        counts += hay_counts[h:pos]
        is_fact += [False] * (pos - h)
        h = pos
        pieces.append(facts[k])
        counts.append(fact_counts[k])
        is_fact.append(True)
    pieces += hay[h:]
    counts += hay_counts[h:]
    is_fact += [False] * (len(hay) - h)
    return pieces, counts, is_fact
