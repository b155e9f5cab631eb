"""A seeded simulator of the bAbI worlds: writes fresh stories in the bAbI text format.

``simulate(task, rng, n_facts)`` returns one story (facts then one question) as bAbI text, so
simulated and file-based samples go through the same parser. Stories that cannot pose the task's
question (e.g. nobody picked anything up) are redrawn from the same random stream, so the result
still depends only on the seed.
"""

from __future__ import annotations

import random

from rmt.babilong.babi import BabiSample, parse_babi
from rmt.babilong.tasks import TASK_SPECS, check_task
from rmt.babilong.worlds.base import GiveUp
from rmt.errors import UsageError

# A view of the task specs (rmt.babilong.tasks), where each task names its world function.
SIMULATORS = {name: spec.simulator for name, spec in TASK_SPECS.items()}


def simulated_tasks() -> list[str]:
    return [name for name, spec in TASK_SPECS.items() if spec.world]


def n_facts_for(task: str, rng: random.Random, n_facts=None) -> int:
    """Draw the story length: an int is used as is, a (lo, hi) pair or None draws uniformly."""
    spec = TASK_SPECS[task]
    if n_facts is None:
        n_facts = spec.facts
    if isinstance(n_facts, int):
        lo = hi = n_facts
    else:
        lo, hi = n_facts
    if lo < 1 or hi < lo:
        raise UsageError(f"n_facts must be a positive int or a (lo, hi) pair with 1 <= lo <= hi, got {n_facts!r}")
    if lo < spec.min_facts:
        raise UsageError(f"{task} needs at least {spec.min_facts} facts per story, got n_facts={n_facts!r}")
    return rng.randint(lo, hi)


def simulate_text(task: str, rng: random.Random, n_facts=None, max_tries: int = 1000) -> str:
    """One story of ``task`` in bAbI text format."""
    task = check_task(task)
    world = TASK_SPECS[task].simulator if TASK_SPECS[task].world else None
    if world is None:
        raise UsageError(f"task {task} has no simulator yet; simulated: {', '.join(simulated_tasks())} "
                         f"(use babi_dir=... to read the bAbI files instead)")
    for _ in range(max_tries):
        n = n_facts_for(task, rng, n_facts)
        try:
            return world(rng, n)
        except GiveUp:
            continue
    raise UsageError(f"{task}: no story that can ask its question in {max_tries} draws with n_facts={n_facts!r}; "
                     f"allow more facts")


def simulate(task: str, rng: random.Random, n_facts=None) -> BabiSample:
    """One simulated sample (facts, question, answer, supporting indices)."""
    (sample,) = parse_babi(simulate_text(task, rng, n_facts), source=f"simulated {task}")
    return sample
