"""Hide facts in background text at a target length measured in tokens.

Facts go between background sentences at positions drawn uniformly with replacement and then
sorted, so the facts keep their order (as in the reference generator). Each sentence is tokenized
once, as it will appear in the text (with its leading space): the text is never re-tokenized as it
grows, so the cost is linear in the length and memory beyond the sample's own text is bounded by
one batch of sentences.
"""

from __future__ import annotations

import random
import re
from typing import Iterable, Iterator

from rmt.babilong.tokens import Counter

LENGTH_NAMES = ["0k", "1k", "2k", "4k", "8k", "16k", "32k", "64k", "128k", "256k", "512k",
                "1M", "2M", "10M"]
_LENGTH = re.compile(r"^(\d+)([kKmM]?)$")
SEPARATOR = " "


def parse_length(length) -> tuple[str, int]:
    """``"4k"`` -> ("4k", 4000), ``"1M"`` -> ("1M", 1000000), ``8192`` -> ("8192", 8192)."""
    if isinstance(length, bool):
        raise ValueError(f"length {length!r} is not a length")
    if isinstance(length, int):
        if length < 0:
            raise ValueError(f"length must be >= 0 tokens, got {length}")
        return str(length), length
    match = _LENGTH.match(str(length).strip())
    if not match:
        raise ValueError(f"unknown length {length!r}; allowed: a token count (e.g. 8192) or a name "
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


def fill_background(sentences: Iterator[str], counter: Counter, budget: int,
                    min_tokens: int = 10, max_tokens: int | None = None) -> tuple[list[str], list[int]]:
    """Whole sentences whose token counts sum to ``budget`` within one sentence.

    Sentences shorter than ``min_tokens`` (or longer than ``max_tokens``) are skipped. Stops at the
    sentence that crosses the budget, keeping it only if that lands closer to the budget.
    """
    chosen: list[str] = []
    counts: list[int] = []
    total = 0
    mean = 25.0  # running estimate of tokens per sentence, to size the next batch
    seen_tokens = seen = 0
    while total < budget:
        want = int((budget - total) / mean * 1.05) + 4
        batch = [next(sentences) for _ in range(min(max(want, 4), 4096))]
        batch_counts = counter.count([SEPARATOR + s for s in batch])
        for sentence, n in zip(batch, batch_counts):
            seen_tokens, seen = seen_tokens + n, seen + 1
            if n < min_tokens or (max_tokens is not None and n > max_tokens):
                continue
            if total + n > budget:
                if total + n - budget < budget - total:  # overshooting is closer than stopping short
                    chosen.append(sentence)
                    counts.append(n)
                    total += n
                return chosen, counts
            chosen.append(sentence)
            counts.append(n)
            total += n
            if total == budget:
                return chosen, counts
        mean = max(1.0, seen_tokens / max(seen, 1))
    return chosen, counts


def build_haystack(facts: list[str], background: Iterator[str] | None, counter: Counter, target_tokens: int,
                   rng: random.Random, min_sentence_tokens: int = 10, max_sentence_tokens: int | None = None) -> dict:
    """The input text with ``facts`` hidden in background sentences, ~``target_tokens`` long.

    Returns ``input``, ``n_tokens`` and ``fact_offsets`` (the token offset where each fact starts).
    With ``target_tokens`` 0 or no background, the input is the facts alone.
    """
    fact_counts = counter.count([SEPARATOR + f for f in facts])
    budget = target_tokens - sum(fact_counts)
    if background is not None and budget > 0:
        hay, hay_counts = fill_background(background, counter, budget, min_sentence_tokens, max_sentence_tokens)
    else:
        hay, hay_counts = [], []
    positions = sorted(rng.randrange(len(hay) + 1) for _ in facts)
    pieces: list[str] = []
    counts: list[int] = []
    fact_piece_index: list[int] = []
    h = 0
    for k, pos in enumerate(positions):
        pieces.extend(hay[h:pos])
        counts.extend(hay_counts[h:pos])
        h = pos
        fact_piece_index.append(len(pieces))
        pieces.append(facts[k])
        counts.append(fact_counts[k])
    pieces.extend(hay[h:])
    counts.extend(hay_counts[h:])
    if pieces:  # the first piece has no leading separator in the text
        counts[0] = counter.count([pieces[0]])[0]
    offsets, total = [], 0
    for n in counts:
        offsets.append(total)
        total += n
    return {
        "input": SEPARATOR.join(pieces),
        "n_tokens": total,
        "fact_offsets": [offsets[i] for i in fact_piece_index],
        "n_background_sentences": len(hay),
    }
