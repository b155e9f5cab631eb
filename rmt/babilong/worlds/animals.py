"""Animals and their kinds: qa15 (basic deduction) and qa16 (basic induction)."""

from __future__ import annotations

import random

from rmt.babilong.worlds.base import GiveUp, StoryWriter

KINDS_QA15 = {"wolf": "wolves", "sheep": "sheep", "mouse": "mice", "cat": "cats"}
NAMES_QA15 = ["Winona", "Jessica", "Emily", "Gertrude"]
KINDS_QA16 = ["swan", "lion", "frog", "rhino"]
COLOURS_QA16 = ["gray", "white", "yellow", "green"]
NAMES_QA16 = ["Lily", "Bernhard", "Greg", "Julius", "Brian"]


def qa15(rng: random.Random, n_facts: int) -> str:
    """Each kind fears another kind; each name is of some kind; what does a name fear?"""
    kinds = list(KINDS_QA15)
    fears = {k: rng.choice([o for o in kinds if o != k]) for k in kinds}
    lines = [("fear", k) for k in kinds] + [("is", n) for n in NAMES_QA15]
    rng.shuffle(lines)
    kind_of = {n: rng.choice(kinds) for n in NAMES_QA15}
    story = StoryWriter()
    where: dict = {}
    for what, x in lines:
        if what == "fear":
            plural = KINDS_QA15[x]
            where[("fear", x)] = story.fact(f"{plural[0].upper() + plural[1:]} are afraid of {KINDS_QA15[fears[x]]}.")
        else:
            where[("is", x)] = story.fact(f"{x} is a {kind_of[x]}.")
    name = rng.choice(NAMES_QA15)
    kind = kind_of[name]
    return story.to_babi(f"What is {name.lower()} afraid of?", fears[kind],
                         [where[("is", name)], where[("fear", kind)]])


def qa16(rng: random.Random, n_facts: int) -> str:
    """Names have kinds, kinds have colours; the last name's colour follows from another of its kind."""
    colour_of = dict(zip(KINDS_QA16, rng.sample(COLOURS_QA16, len(KINDS_QA16))))
    names = rng.sample(NAMES_QA16, len(NAMES_QA16))
    known, asked = names[:-1], names[-1]
    kind_of = {n: rng.choice(KINDS_QA16) for n in known}
    kind_of[asked] = kind_of[rng.choice(known)]  # at least one known animal of the same kind
    story = StoryWriter()
    facts: dict = {}
    for n in known:
        facts[("kind", n)] = story.fact(f"{n} is a {kind_of[n]}.")
        facts[("colour", n)] = story.fact(f"{n} is {colour_of[kind_of[n]]}.")
    facts[("kind", asked)] = story.fact(f"{asked} is a {kind_of[asked]}.")
    witness = [n for n in known if kind_of[n] == kind_of[asked]][-1]
    if not witness:
        raise GiveUp
    return story.to_babi(f"What color is {asked}?", colour_of[kind_of[asked]],
                         [facts[("kind", asked)], facts[("kind", witness)], facts[("colour", witness)]])
