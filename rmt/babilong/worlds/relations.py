"""Spatial relations between rooms and shapes: qa4 (two-argument relations), qa17 (positional
reasoning), qa18 (size reasoning), qa19 (path finding)."""

from __future__ import annotations

import random

from rmt.babilong.worlds.base import ROOMS, GiveUp, StoryWriter

OPPOSITE = {"north": "south", "south": "north", "east": "west", "west": "east"}


def qa4(rng: random.Random, n_facts: int) -> str:
    """Two facts chain three rooms along one axis; ask about one of the two relations."""
    a, b, c = rng.sample(ROOMS, 3)
    direction = rng.choice(sorted(OPPOSITE))
    story = StoryWriter()
    # a is <direction> of b, b is <direction> of c (told in either order, either phrasing)
    pairs = [(a, b), (b, c)]
    rng.shuffle(pairs)
    for x, y in pairs:
        if rng.random() < 0.5:
            story.fact(f"The {x} is {direction} of the {y}.")
        else:
            story.fact(f"The {y} is {OPPOSITE[direction]} of the {x}.")
    k = rng.randrange(2)
    x, y = pairs[k]  # x is <direction> of y
    if rng.random() < 0.5:
        d = direction if rng.random() < 0.5 else OPPOSITE[direction]
        subject, obj = (x, y) if d == direction else (y, x)
        return story.to_babi(f"What is {d} of the {obj}?", subject, [k])
    d = direction if rng.random() < 0.5 else OPPOSITE[direction]
    subject, obj = (x, y) if d == direction else (y, x)
    return story.to_babi(f"What is the {obj} {OPPOSITE[d]} of?", subject, [k])
