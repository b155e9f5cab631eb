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


SHAPES = ["red square", "blue square", "pink rectangle", "yellow square", "red sphere", "blue sphere",
          "triangle", "pink triangle"]
# relation phrase -> offset (dx, dy) of the subject from the object: "above" = directly above
SPATIAL = {"above": (0, 1), "below": (0, -1), "to the left of": (-1, 0), "to the right of": (1, 0)}


def qa17(rng: random.Random, n_facts: int) -> str:
    """Two facts tie shapes a-b and b-c (each directly beside/above the other); ask about a and c."""
    a, b, c = rng.sample(SHAPES, 3)
    story = StoryWriter()
    pos = {b: (0, 0)}
    for x in (a, c):
        rel = rng.choice(sorted(SPATIAL))
        dx, dy = SPATIAL[rel]
        pos[x] = (dx, dy)
        story.fact(f"The {x} is {rel} the {b}." if rng.random() < 0.5 else
                   f"The {b} is {_inverse(rel)} the {x}.")
    x, y = (a, c) if rng.random() < 0.5 else (c, a)
    dx, dy = pos[x][0] - pos[y][0], pos[x][1] - pos[y][1]
    askable = [r for r, (ox, oy) in SPATIAL.items() if (ox and dx) or (oy and dy)]
    if not askable:  # both shapes landed on the same spot: nothing to ask
        raise GiveUp
    rel = rng.choice(askable)
    ox, oy = SPATIAL[rel]
    yes = (ox and (dx > 0) == (ox > 0)) or (oy and (dy > 0) == (oy > 0))
    first = 0 if x == a else 1
    return story.to_babi(f"Is the {x} {rel} the {y}?", "yes" if yes else "no", [first, 1 - first])


def _inverse(rel: str) -> str:
    return {"above": "below", "below": "above", "to the left of": "to the right of",
            "to the right of": "to the left of"}[rel]


BOXES = ["chocolate", "box of chocolates", "box", "suitcase", "container", "chest"]


def qa18(rng: random.Random, n_facts: int) -> str:
    """A hidden size order; facts state some smaller/bigger pairs; ask about a pair the facts decide
    through a chain of two facts."""
    order = rng.sample(BOXES, len(BOXES))  # smallest first
    rank = {x: i for i, x in enumerate(order)}
    story = StoryWriter()
    told: list[tuple[str, str, int]] = []  # (smaller, bigger, fact index)
    for _ in range(n_facts):
        small, big = sorted(rng.sample(BOXES, 2), key=rank.get)
        text = f"The {small} fits inside the {big}." if rng.random() < 0.5 else f"The {big} is bigger than the {small}."
        told.append((small, big, story.fact(text)))
    chains = [(s1, b2, f1, f2) for s1, b1, f1 in told for s2, b2, f2 in told if b1 == s2 and s1 != b2]
    if not chains:
        raise GiveUp
    small, big, f1, f2 = rng.choice(chains)
    if rng.random() < 0.5:
        x, y = (small, big) if rng.random() < 0.5 else (big, small)
        return story.to_babi(f"Does the {x} fit in the {y}?", "yes" if x == small else "no", [f2, f1])
    x, y = (big, small) if rng.random() < 0.5 else (small, big)
    return story.to_babi(f"Is the {x} bigger than the {y}?", "yes" if x == big else "no", [f2, f1])


COMPASS = {"north": (0, 1), "south": (0, -1), "east": (1, 0), "west": (-1, 0)}


def qa19(rng: random.Random, n_facts: int) -> str:
    """Rooms on a grid joined as a tree; facts state each joint; ask a two-step path."""
    rooms = rng.sample(ROOMS, min(len(ROOMS), n_facts + 1))
    cell = {rooms[0]: (0, 0)}
    taken = {(0, 0)}
    story = StoryWriter()
    edges = []
    for room in rooms[1:]:
        options = [(r, d) for r in cell for d, (dx, dy) in COMPASS.items()
                   if (cell[r][0] + dx, cell[r][1] + dy) not in taken]
        anchor, d = rng.choice(sorted(options))
        dx, dy = COMPASS[d]
        cell[room] = (cell[anchor][0] + dx, cell[anchor][1] + dy)
        taken.add(cell[room])
        edges.append((room, d, anchor))
    rng.shuffle(edges)
    step: dict[tuple, tuple] = {}  # (from, to) -> (letter, fact index)
    for room, d, anchor in edges:
        idx = story.fact(f"The {room} is {d} of the {anchor}.")
        step[(anchor, room)] = (d[0], idx)
        step[(room, anchor)] = (OPPOSITE[d][0], idx)
    paths = [(a, b, m) for (a, m) in step for (m2, b) in step if m2 == m and b != a]
    if not paths:
        raise GiveUp
    a, b, m = rng.choice(sorted(paths))
    (d1, f1), (d2, f2) = step[(a, m)], step[(m, b)]
    return story.to_babi(f"How do you go from the {a} to the {b}?", f"{d1},{d2}", [f1, f2])
