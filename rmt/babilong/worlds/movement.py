"""People walking between rooms: qa1 (single supporting fact), qa9 (negation),
qa10 (indefinite knowledge), qa11 (coreference), qa12 (conjunction), qa13 (compound coreference),
qa14 (time reasoning)."""

from __future__ import annotations

import random

from rmt.babilong.worlds.base import (
    MOVE_VERBS, PEOPLE, PEOPLE_QA10, PLACES_QA10, PRONOUN, ROOMS, GiveUp, StoryWriter,
    move_sentence, pick_other,
)


def _walk(rng: random.Random, story: StoryWriter, n_facts: int, people=PEOPLE, rooms=ROOMS):
    """n_facts random moves; returns {person: (room, index of the fact that put them there)}."""
    where: dict[str, tuple[str, int]] = {}
    for _ in range(n_facts):
        who = rng.choice(people)
        room = pick_other(rng, rooms, where.get(who, (None,))[0])
        where[who] = (room, story.fact(move_sentence(rng, who, room)))
    return where


def qa1(rng: random.Random, n_facts: int) -> str:
    story = StoryWriter()
    where = _walk(rng, story, n_facts)
    who = rng.choice(sorted(where))
    room, fact = where[who]
    return story.to_babi(f"Where is {who}?", room, [fact])


def qa9(rng: random.Random, n_facts: int) -> str:
    """Moves plus plain and negated statements ("X is not in the Y", "X is no longer in the Y")."""
    story = StoryWriter()
    # state: person -> (room or None, negated room or None, fact index)
    state: dict[str, tuple] = {}
    for _ in range(n_facts):
        who = rng.choice(PEOPLE)
        kind = rng.random()
        current = state.get(who, (None, None, -1))[0]
        if kind < 0.25 and current is not None:
            text = rng.choice([f"{who} is no longer in the {current}.", f"{who} is not in the {current}."])
            state[who] = (None, current, story.fact(text))
        else:
            room = pick_other(rng, ROOMS, current)
            text = f"{who} is in the {room}." if kind < 0.5 else move_sentence(rng, who, room)
            state[who] = (room, None, story.fact(text))
    who = rng.choice(sorted(state))
    room, negated, fact = state[who]
    if room is not None:
        asked = room if rng.random() < 0.5 else pick_other(rng, ROOMS, room)
        answer = "yes" if asked == room else "no"
    else:
        asked, answer = negated, "no"
    return story.to_babi(f"Is {who} in the {asked}?", answer, [fact])


def qa10(rng: random.Random, n_facts: int) -> str:
    """Moves plus "X is either in the A or the B.": questions about such a person answer maybe/no."""
    story = StoryWriter()
    state: dict[str, tuple] = {}  # person -> (frozenset of possible places, fact index)
    for _ in range(n_facts):
        who = rng.choice(PEOPLE_QA10)
        if rng.random() < 0.3:
            a, b = rng.sample(PLACES_QA10, 2)
            state[who] = (frozenset((a, b)), story.fact(f"{who} is either in the {a} or the {b}."))
        else:
            room = rng.choice(PLACES_QA10)
            text = f"{who} is in the {room}." if rng.random() < 0.3 else move_sentence(rng, who, room)
            state[who] = (frozenset((room,)), story.fact(text))
    who = rng.choice(sorted(state))
    places, fact = state[who]
    asked = rng.choice(sorted(places)) if rng.random() < 0.5 else rng.choice(PLACES_QA10)
    if asked not in places:
        answer = "no"
    else:
        answer = "yes" if len(places) == 1 else "maybe"
    return story.to_babi(f"Is {who} in the {asked}?", answer, [fact])


AFTER = ["Then", "After that", "Following that", "Afterwards"]


def qa11(rng: random.Random, n_facts: int) -> str:
    """Pairs "X moved to A." + "Then he moved to B.": the second fact needs the first to resolve."""
    story = StoryWriter()
    where: dict[str, tuple] = {}
    while len(story) < n_facts:
        who = rng.choice(PEOPLE)
        room = pick_other(rng, ROOMS, where.get(who, (None,))[0])
        first = story.fact(move_sentence(rng, who, room))
        where[who] = (room, [first])
        if len(story) < n_facts:
            room = pick_other(rng, ROOMS, room)
            verb = rng.choice(MOVE_VERBS)
            second = story.fact(f"{rng.choice(AFTER)} {PRONOUN[who]} {verb} the {room}.")
            where[who] = (room, [first, second])
    who = rng.choice(sorted(where))
    room, facts = where[who]
    return story.to_babi(f"Where is {who}?", room, facts)


def _pair_moves(rng, story, n_facts, pronoun_followups: bool):
    where: dict[str, tuple] = {}
    while len(story) < n_facts:
        a, b = rng.sample(PEOPLE, 2)
        room = rng.choice(ROOMS)
        first = story.fact(f"{a} and {b} {rng.choice(MOVE_VERBS)} the {room}.")
        where[a] = where[b] = (room, [first])
        if pronoun_followups and len(story) < n_facts:
            room = pick_other(rng, ROOMS, room)
            second = story.fact(f"{rng.choice(AFTER)} they {rng.choice(MOVE_VERBS)} the {room}.")
            where[a] = where[b] = (room, [first, second])
    return where


def _where_is_one_of_a_pair(rng: random.Random, n_facts: int, pronoun_followups: bool) -> str:
    story = StoryWriter()
    where = _pair_moves(rng, story, n_facts, pronoun_followups=pronoun_followups)
    who = rng.choice(sorted(where))
    room, facts = where[who]
    return story.to_babi(f"Where is {who}?", room, facts)


def qa12(rng: random.Random, n_facts: int) -> str:
    """Conjunction: "Mary and John went to the kitchen."."""
    return _where_is_one_of_a_pair(rng, n_facts, pronoun_followups=False)


def qa13(rng: random.Random, n_facts: int) -> str:
    """Compound coreference: a pair moves, then "Then they went to the garden."."""
    return _where_is_one_of_a_pair(rng, n_facts, pronoun_followups=True)


TIMES = ["yesterday", "this morning", "this afternoon", "this evening"]


def qa14(rng: random.Random, n_facts: int) -> str:
    """Each person visits places at four times of day, told out of order; ask where someone was
    before a place."""
    people = PEOPLE_QA10
    plans: dict[str, list[str]] = {}
    for who in people:  # a place per time slot, consecutive places differ
        seq = [rng.choice(PLACES_QA10)]
        for _ in TIMES[1:]:
            seq.append(pick_other(rng, PLACES_QA10, seq[-1]))
        plans[who] = seq
    events = [(who, t) for who in people for t in range(len(TIMES))]
    rng.shuffle(events)
    events = events[: max(2, min(n_facts, len(events)))]
    story = StoryWriter()
    told: dict[tuple, int] = {}
    for who, t in events:
        place, when = plans[who][t], TIMES[t]
        verb = rng.choice(MOVE_VERBS)
        if rng.random() < 0.5:
            text = f"{when[0].upper() + when[1:]} {who} {verb} the {place}."
        else:
            text = f"{who} {verb} the {place} {when}."
        told[(who, t)] = story.fact(text)
    # A question "where was X before P": P told at slot t, slot t-1 told too, P unique among X's told slots.
    options = []
    for (who, t), idx in told.items():
        if t == 0 or (who, t - 1) not in told:
            continue
        told_places = [plans[who][s] for s in range(len(TIMES)) if (who, s) in told]
        if told_places.count(plans[who][t]) == 1:
            options.append((who, t, idx))
    if not options:
        raise GiveUp
    who, t, idx = rng.choice(sorted(options))
    return story.to_babi(f"Where was {who} before the {plans[who][t]}?", plans[who][t - 1],
                         [idx, told[(who, t - 1)]])
