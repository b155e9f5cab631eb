"""Shared vocabulary of the simulated bAbI worlds and the writer of bAbI-format stories.

The words mirror the bAbI v1.2 files (Weston et al. 2015) so simulated samples read like the real
ones: the same people, rooms, objects and verb phrasings.
"""

from __future__ import annotations

import random

from rmt.babilong.tasks import ROOMS  # noqa: F401  (one list of rooms; its order drives the simulator)

PEOPLE = ["Mary", "John", "Daniel", "Sandra"]
PEOPLE_QA5 = ["Fred", "Jeff", "Bill", "Mary"]
PEOPLE_QA10 = ["Mary", "Bill", "Fred", "Julie"]
PLACES_QA10 = ["school", "kitchen", "bedroom", "park", "cinema", "office"]
OBJECTS = ["football", "apple", "milk"]
MOVE_VERBS = ["travelled to", "journeyed to", "went back to", "moved to", "went to"]
TAKE_VERBS = ["got", "grabbed", "picked up", "took"]
DROP_VERBS = ["dropped", "left", "put down", "discarded"]
GIVE_VERBS = ["gave", "handed", "passed"]
PRONOUN = {"Mary": "she", "Sandra": "she", "Julie": "she", "John": "he", "Daniel": "he", "Bill": "he",
           "Fred": "he", "Jeff": "he"}
NUMBER_WORDS = ["none", "one", "two", "three", "four", "five"]


class GiveUp(Exception):
    """The simulated story cannot ask this task's question; the caller draws a fresh story."""


class StoryWriter:
    """Collects fact lines and the final question, and writes them in the bAbI text format."""

    def __init__(self) -> None:
        self.facts: list[str] = []

    def fact(self, text: str) -> int:
        """Add a fact; return its index (0-based) for supporting-fact references."""
        self.facts.append(text)
        return len(self.facts) - 1

    def __len__(self) -> int:
        return len(self.facts)

    def to_babi(self, question: str, answer: str, supporting: list[int]) -> str:
        lines = [f"{i + 1} {fact}" for i, fact in enumerate(self.facts)]
        ids = " ".join(str(i + 1) for i in supporting)
        lines.append(f"{len(self.facts) + 1} {question}\t{answer}\t{ids}")
        return "\n".join(lines) + "\n"


def move_sentence(rng: random.Random, who: str, where: str) -> str:
    return f"{who} {rng.choice(MOVE_VERBS)} the {where}."


def pick_other(rng: random.Random, options: list[str], current) -> str:
    return rng.choice([o for o in options if o != current])
