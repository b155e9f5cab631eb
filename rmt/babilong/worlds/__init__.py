"""A seeded simulator of the bAbI worlds: writes fresh stories in the bAbI text format.

``simulate(task, rng, n_facts)`` returns one story (facts then one question) as bAbI text, so
simulated and file-based samples go through the same parser. Stories that cannot pose the task's
question (e.g. nobody picked anything up) are redrawn from the same random stream, so the result
still depends only on the seed.
"""

from __future__ import annotations

import random

from rmt.babilong.babi import BabiSample, parse_babi
from rmt.babilong.tasks import check_task
from rmt.babilong.worlds import animals, motivations, movement, objects, relations
from rmt.babilong.worlds.base import GiveUp

SIMULATORS = {
    "qa1": movement.qa1,
    "qa2": objects.qa2,
    "qa3": objects.qa3,
    "qa4": relations.qa4,
    "qa5": objects.qa5,
    "qa6": objects.qa6,
    "qa7": objects.qa7,
    "qa8": objects.qa8,
    "qa9": movement.qa9,
    "qa10": movement.qa10,
    "qa11": movement.qa11,
    "qa12": movement.qa12,
    "qa13": movement.qa13,
    "qa14": movement.qa14,
    "qa15": animals.qa15,
    "qa16": animals.qa16,
    "qa17": relations.qa17,
    "qa18": relations.qa18,
    "qa19": relations.qa19,
    "qa20": motivations.qa20,
}

# Facts per story when the caller gives none: roughly the spread of the bAbI test files.
DEFAULT_FACTS: dict[str, tuple[int, int]] = {
    "qa1": (2, 10), "qa2": (2, 30), "qa3": (4, 60), "qa4": (2, 2), "qa5": (4, 30),
    "qa6": (2, 14), "qa7": (2, 20), "qa8": (2, 20), "qa9": (2, 10), "qa10": (2, 10),
    "qa11": (2, 10), "qa12": (2, 10), "qa13": (2, 10), "qa14": (2, 14), "qa15": (8, 8),
    "qa16": (9, 9), "qa17": (2, 2), "qa18": (5, 15), "qa19": (5, 5), "qa20": (1, 12),
}


# Fewest facts that can pose the task's question (e.g. qa5: two people meet, one takes, one gives).
MIN_FACTS = {"qa2": 2, "qa3": 3, "qa5": 4, "qa7": 2, "qa8": 2, "qa14": 2, "qa18": 2, "qa19": 2}
# Tasks whose stories have a fixed shape; n_facts does not change them.
FIXED_SHAPE = {"qa4": "2 facts", "qa15": "8 facts", "qa16": "9 facts", "qa17": "2 facts"}


def simulated_tasks() -> list[str]:
    return list(SIMULATORS)


def n_facts_for(task: str, rng: random.Random, n_facts=None) -> int:
    """Draw the story length: an int is used as is, a (lo, hi) pair or None draws uniformly."""
    if n_facts is None:
        n_facts = DEFAULT_FACTS[task]
    if isinstance(n_facts, int):
        lo = hi = n_facts
    else:
        lo, hi = n_facts
    if lo < 1 or hi < lo:
        raise ValueError(f"n_facts must be a positive int or a (lo, hi) pair with 1 <= lo <= hi, got {n_facts!r}")
    if lo < MIN_FACTS.get(task, 1):
        raise ValueError(f"{task} needs at least {MIN_FACTS[task]} facts per story, got n_facts={n_facts!r}")
    return rng.randint(lo, hi)


def simulate_text(task: str, rng: random.Random, n_facts=None, max_tries: int = 1000) -> str:
    """One story of ``task`` in bAbI text format."""
    task = check_task(task)
    if task not in SIMULATORS:
        raise ValueError(f"task {task} has no simulator yet; simulated: {', '.join(SIMULATORS)} "
                         f"(use babi_dir=... to read the bAbI files instead)")
    for _ in range(max_tries):
        n = n_facts_for(task, rng, n_facts)
        try:
            return SIMULATORS[task](rng, n)
        except GiveUp:
            continue
    raise ValueError(f"{task}: no story that can ask its question in {max_tries} draws with n_facts={n_facts!r}; "
                     f"allow more facts")


def simulate(task: str, rng: random.Random, n_facts=None) -> BabiSample:
    """One simulated sample (facts, question, answer, supporting indices)."""
    (sample,) = parse_babi(simulate_text(task, rng, n_facts), source=f"simulated {task}")
    return sample
