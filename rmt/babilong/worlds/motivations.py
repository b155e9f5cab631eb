"""qa20 (agents' motivations): a feeling sends a person to a room, where they pick up a thing."""

from __future__ import annotations

import random

from rmt.babilong.worlds.base import MOVE_VERBS, TAKE_VERBS, GiveUp, StoryWriter

PEOPLE_QA20 = ["Jason", "Antoine", "Sumit", "Yann"]
# feeling -> (room it sends you to, object you get there)
MOTIVES = {"thirsty": ("kitchen", "milk"), "hungry": ("kitchen", "apple"), "bored": ("garden", "football"),
           "tired": ("bedroom", "pajamas")}


def qa20(rng: random.Random, n_facts: int) -> str:
    story = StoryWriter()
    # person -> [feeling, fact index of the feeling, stage (1 told, 2 went, 3 got)]
    state: dict[str, list] = {}
    for _ in range(n_facts):
        who = rng.choice(PEOPLE_QA20)
        current = state.get(who)
        if current is None or current[2] == 3:
            feeling = rng.choice(sorted(MOTIVES))
            state[who] = [feeling, story.fact(f"{who} is {feeling}."), 1]
        elif current[2] == 1:
            story.fact(f"{who} {rng.choice(MOVE_VERBS)} the {MOTIVES[current[0]][0]}.")
            current[2] = 2
        else:
            story.fact(f"{who} {rng.choice(TAKE_VERBS)} the {MOTIVES[current[0]][1]} there.")
            current[2] = 3
    if not state:
        raise GiveUp
    who = rng.choice(sorted(state))
    feeling, fact, stage = state[who]
    room, thing = MOTIVES[feeling]
    if stage == 1:
        return story.to_babi(f"Where will {who.lower()} go?", room, [fact])
    if stage == 2 or rng.random() < 0.5:
        return story.to_babi(f"Why did {who.lower()} go to the {room}?", feeling, [fact])
    return story.to_babi(f"Why did {who.lower()} get the {thing}?", feeling, [fact])
