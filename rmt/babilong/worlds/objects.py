"""People moving and carrying objects: qa2 (two supporting facts), qa3 (three supporting facts),
qa5 (three-argument relations: giving), qa7 (counting), qa8 (lists/sets)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from rmt.babilong.worlds.base import (
    DROP_VERBS, GIVE_VERBS, NUMBER_WORDS, OBJECTS, PEOPLE, PEOPLE_QA5, ROOMS, TAKE_VERBS, GiveUp,
    StoryWriter, move_sentence, pick_other,
)


@dataclass
class ObjectWorld:
    """Who is where, who holds what, and the fact indices that established each of those."""

    rng: random.Random
    people: list[str]
    story: StoryWriter = field(default_factory=StoryWriter)
    room: dict = field(default_factory=dict)  # person -> room
    moved_at: dict = field(default_factory=dict)  # person -> fact index of their latest move
    holder: dict = field(default_factory=dict)  # object -> person (absent: not held)
    floor: dict = field(default_factory=dict)  # object -> (room, drop fact, move fact before it)
    handled_at: dict = field(default_factory=dict)  # object -> fact of its latest take/drop/give
    inventory: dict = field(default_factory=dict)  # person -> objects held, in order of getting them
    gives: list = field(default_factory=list)  # (giver, object, receiver, fact index)
    trail: dict = field(default_factory=dict)  # object -> [(room, fact index that put it there)]
    last_count_fact: dict = field(default_factory=dict)  # person -> facts changing what they hold

    def move(self, who: str) -> None:
        room = pick_other(self.rng, ROOMS, self.room.get(who))
        idx = self.story.fact(move_sentence(self.rng, who, room))
        self.room[who], self.moved_at[who] = room, idx
        for obj in self.inventory.get(who, []):
            self.trail.setdefault(obj, []).append((room, idx))

    def take(self, who: str, obj: str) -> None:
        there = " there" if self.rng.random() < 0.5 else ""
        idx = self.story.fact(f"{who} {self.rng.choice(TAKE_VERBS)} the {obj}{there}.")
        self.holder[obj] = who
        self.floor.pop(obj, None)
        self.inventory.setdefault(who, []).append(obj)
        self.handled_at[obj] = idx
        self.last_count_fact.setdefault(who, []).append(idx)
        trail = self.trail.setdefault(obj, [])
        if not trail or trail[-1][0] != self.room[who]:
            trail.append((self.room[who], self.moved_at[who]))

    def drop(self, who: str, obj: str) -> None:
        there = " there" if self.rng.random() < 0.2 else ""
        idx = self.story.fact(f"{who} {self.rng.choice(DROP_VERBS)} the {obj}{there}.")
        del self.holder[obj]
        self.inventory[who].remove(obj)
        self.floor[obj] = (self.room[who], idx, self.moved_at[who])
        self.handled_at[obj] = idx
        self.last_count_fact.setdefault(who, []).append(idx)

    def give(self, who: str, obj: str, to: str) -> None:
        idx = self.story.fact(f"{who} {self.rng.choice(GIVE_VERBS)} the {obj} to {to}.")
        self.holder[obj] = to
        self.inventory[who].remove(obj)
        self.inventory.setdefault(to, []).append(obj)
        self.handled_at[obj] = idx
        self.gives.append((who, obj, to, idx))
        self.last_count_fact.setdefault(who, []).append(idx)
        self.last_count_fact.setdefault(to, []).append(idx)

    def step(self, p_move: float, allow_give: bool, max_hold: int = 3) -> None:
        """One random action that keeps the world consistent."""
        rng = self.rng
        who = rng.choice(self.people)
        if who not in self.room or rng.random() < p_move:
            return self.move(who)
        here = self.room[who]
        held = self.inventory.get(who, [])
        takeable = [o for o in OBJECTS if o not in self.holder and self.floor.get(o, (here,))[0] == here]
        mates = [p for p in self.people if p != who and self.room.get(p) == here]
        options = []
        if takeable and len(held) < max_hold:
            options.append("take")
        if held:
            options.append("drop")
            if allow_give and mates:
                options += ["give", "give"]
        if not options:
            return self.move(who)
        action = rng.choice(options)
        if action == "take":
            self.take(who, rng.choice(takeable))
        elif action == "drop":
            self.drop(who, rng.choice(held))
        else:
            self.give(who, rng.choice(held), rng.choice(mates))


def qa2(rng: random.Random, n_facts: int) -> str:
    world = ObjectWorld(rng, PEOPLE)
    while len(world.story) < n_facts:
        world.step(p_move=0.55, allow_give=False)
    options = []
    for obj in OBJECTS:
        if obj in world.holder:
            who = world.holder[obj]
            options.append((obj, world.room[who], sorted([world.handled_at[obj], world.moved_at[who]])))
        elif obj in world.floor:
            room, drop_fact, move_fact = world.floor[obj]
            options.append((obj, room, [drop_fact, move_fact]))
    if not options:
        raise GiveUp
    obj, room, support = rng.choice(options)
    return world.story.to_babi(f"Where is the {obj}?", room, support)


def qa3(rng: random.Random, n_facts: int) -> str:
    world = ObjectWorld(rng, PEOPLE)
    while len(world.story) < n_facts:
        world.step(p_move=0.5, allow_give=False)
    options = []
    for obj, trail in world.trail.items():
        rooms = [r for r, _ in trail]
        for k in range(1, len(trail)):
            if rooms.count(rooms[k]) == 1:  # unambiguous "before the <room>"
                options.append((obj, k))
    if not options:
        raise GiveUp
    obj, k = rng.choice(options)
    trail = world.trail[obj]
    support = [world.handled_at[obj], trail[k][1], trail[k - 1][1]]
    return world.story.to_babi(f"Where was the {obj} before the {trail[k][0]}?", trail[k - 1][0], support)


def qa6(rng: random.Random, n_facts: int) -> str:
    """Yes/no: is a person in a room? Objects change hands around them, as in bAbI."""
    world = ObjectWorld(rng, PEOPLE)
    while len(world.story) < n_facts:
        world.step(p_move=0.6, allow_give=False)
    who = rng.choice(sorted(world.room))
    room = world.room[who]
    asked = room if rng.random() < 0.5 else pick_other(rng, ROOMS, room)
    return world.story.to_babi(f"Is {who} in the {asked}?", "yes" if asked == room else "no", [world.moved_at[who]])


def qa5(rng: random.Random, n_facts: int) -> str:
    world = ObjectWorld(rng, PEOPLE_QA5)
    while len(world.story) < n_facts:
        world.step(p_move=0.35, allow_give=True)
    if not world.gives:
        raise GiveUp
    giver, obj, receiver, idx = world.gives[-1] if rng.random() < 0.5 else rng.choice(world.gives)
    form = rng.randrange(5)
    # Every form is answered by the latest give that matches what the question states.
    if form == 0:
        latest = [g for g in world.gives if g[0] == giver and g[2] == receiver][-1]
        q, a = f"What did {giver} give to {receiver}?", latest[1]
    elif form == 1:
        latest = [g for g in world.gives if g[1] == obj and g[2] == receiver][-1]
        q, a = f"Who gave the {obj} to {receiver}?", latest[0]
    elif form == 2:
        latest = [g for g in world.gives if g[0] == giver and g[1] == obj][-1]
        q, a = f"Who did {giver} give the {obj} to?", latest[2]
    elif form == 3:
        latest = [g for g in world.gives if g[1] == obj][-1]
        q, a = f"Who gave the {obj}?", latest[0]
    else:
        latest = [g for g in world.gives if g[1] == obj][-1]
        q, a = f"Who received the {obj}?", latest[2]
    return world.story.to_babi(q, a, [latest[3]])


def _carry_world(rng: random.Random, n_facts: int) -> ObjectWorld:
    world = ObjectWorld(rng, PEOPLE)
    while len(world.story) < n_facts:
        world.step(p_move=0.4, allow_give=True)
    return world


def qa7(rng: random.Random, n_facts: int) -> str:
    world = _carry_world(rng, n_facts)
    if not world.last_count_fact:
        raise GiveUp
    who = rng.choice(sorted(world.last_count_fact))
    count = len(world.inventory.get(who, []))
    return world.story.to_babi(f"How many objects is {who} carrying?", NUMBER_WORDS[count],
                               world.last_count_fact[who][-2:])


def qa8(rng: random.Random, n_facts: int) -> str:
    world = _carry_world(rng, n_facts)
    if not world.last_count_fact:
        raise GiveUp
    who = rng.choice(sorted(world.last_count_fact))
    held = world.inventory.get(who, [])
    answer = ",".join(held) if held else "nothing"
    return world.story.to_babi(f"What is {who} carrying?", answer, world.last_count_fact[who][-len(held) or -1:])
