"""The 20 bAbI tasks, one spec each: everything the toolkit knows about a task lives here.

Scoring (labels), prompts (instruction, answer kind -> post-prompt, example story sizes), the world
simulator (which world writes it, how many facts), the bAbI file loader (file stem), training
(the task names) and the lm-eval export all read :data:`TASK_SPECS`; nothing keeps a table of its
own. A new task is one :class:`TaskSpec` here plus its world function.

This module imports nothing from the rest of the package, so anything may import it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from rmt.errors import UsageError

# World order: the simulator draws rooms from this list, so reordering it changes every seed's data.
ROOMS = ("bathroom", "hallway", "garden", "office", "bedroom", "kitchen")
_ROOM_LABELS = tuple(sorted(ROOMS))

# Answer kind -> the post-prompt line that tells the model how to answer (our own words).
ANSWER_KINDS: dict[str, str] = {
    "room": "Answer with one word: the name of a room, e.g. kitchen.",
    "name_or_object": "Answer with one word: a person's name or an object.",
    "yes_no": "Answer with one word: yes or no.",
    "yes_no_maybe": "Answer with one word: yes, no or maybe.",
    "count": "Answer with one word: none, one, two or three.",
    "list": "Answer with the objects separated by commas, e.g. apple,milk, or with nothing if there are none.",
    "animal": "Answer with one word: an animal.",
    "colour": "Answer with one word: a colour.",
    "path": "Answer with two compass letters separated by a comma, e.g. n,e.",
    "motivation": "Answer with one word.",
}

_BASE = ("You will read a long text. Hidden in it are short facts about people, places and things; "
         "the rest is unrelated. ")


@dataclass(frozen=True)
class TaskSpec:
    """One bAbI task.

    name: ``qa1`` ... ``qa20``; file: the bAbI v1.2 file stem; world: ``module.function`` in
    ``rmt.babilong.worlds`` that writes its stories; facts: default facts per simulated story (lo, hi),
    roughly the spread of the bAbI test files; min_facts: fewest facts that can pose the question;
    fixed_shape: set when the story shape is fixed (n_facts does not change it); answer: the answer
    kind (a key of :data:`ANSWER_KINDS`); labels: the fixed answer vocabulary (the bAbI files'
    answers, tested against them), which scoring searches for; instruction: our prompt's task
    instruction; example_facts: facts per story in the prompt's few-shot examples.
    """

    name: str
    file: str
    world: str
    facts: tuple[int, int]
    answer: str
    labels: tuple[str, ...]
    instruction: str
    min_facts: int = 1
    fixed_shape: str | None = None
    example_facts: tuple[int, int] = (2, 6)

    @property
    def post_prompt(self) -> str:
        return ANSWER_KINDS[self.answer]

    @property
    def simulator(self):
        """The world function ``(rng, n_facts) -> bAbI text`` (imported on first use)."""
        module, function = self.world.split(".")
        return getattr(importlib.import_module(f"rmt.babilong.worlds.{module}"), function)


def _spec(name, file, world, facts, answer, labels, instruction, **kw) -> TaskSpec:
    return TaskSpec(name=name, file=f"{name}_{file}", world=world, facts=facts, answer=answer,
                    labels=tuple(labels), instruction=_BASE + instruction, **kw)


TASK_SPECS: dict[str, TaskSpec] = {s.name: s for s in (
    _spec("qa1", "single-supporting-fact", "movement.qa1", (2, 10), "room", _ROOM_LABELS,
          "Use the facts to say where a person is now: the last place they went to is where they are."),
    _spec("qa2", "two-supporting-facts", "objects.qa2", (2, 30), "room", _ROOM_LABELS,
          "Say where an object is: it is wherever the person carrying it went last, or where it was put down.",
          min_facts=2),
    _spec("qa3", "three-supporting-facts", "objects.qa3", (4, 60), "room", _ROOM_LABELS,
          "Follow an object as people carry it from room to room, and say which room it was in just before a given room.",
          min_facts=3, example_facts=(4, 8)),
    _spec("qa4", "two-arg-relations", "relations.qa4", (2, 2), "room", _ROOM_LABELS,
          "The facts say how rooms lie relative to each other (north, south, east, west). Answer which room stands in the asked relation.",
          fixed_shape="2 facts"),
    _spec("qa5", "three-arg-relations", "objects.qa5", (4, 30), "name_or_object",
          ["Bill", "Fred", "Jeff", "Mary", "apple", "football", "milk"],
          "People pass objects to each other. Answer who gave what to whom, using the most recent matching handover.",
          min_facts=4, example_facts=(4, 8)),
    _spec("qa6", "yes-no-questions", "objects.qa6", (2, 14), "yes_no", ["no", "yes"],
          "Answer whether a person is in a given place right now, going by the last place they moved to."),
    _spec("qa7", "counting", "objects.qa7", (2, 20), "count", ["none", "one", "three", "two"],
          "Count the objects a person is holding now: picking up or receiving adds one, dropping or handing over removes one.",
          min_facts=2),
    _spec("qa8", "lists-sets", "objects.qa8", (2, 20), "list", ["apple", "football", "milk", "nothing"],
          "List the objects a person is holding now, in the order they got them.", min_facts=2),
    _spec("qa9", "simple-negation", "movement.qa9", (2, 10), "yes_no", ["no", "yes"],
          "Some facts say where a person is not. Answer whether a person is in a given place now."),
    _spec("qa10", "indefinite-knowledge", "movement.qa10", (2, 10), "yes_no_maybe", ["maybe", "no", "yes"],
          "Some facts are uncertain (\"either here or there\"). Answer yes, no, or maybe when the facts cannot decide."),
    _spec("qa11", "basic-coreference", "movement.qa11", (2, 10), "room", _ROOM_LABELS,
          "Some facts refer to a person as he or she. Work out who is meant and say where the person is now."),
    _spec("qa12", "conjunction", "movement.qa12", (2, 10), "room", _ROOM_LABELS,
          "Some facts move two people at once. Say where a person is now."),
    _spec("qa13", "compound-coreference", "movement.qa13", (2, 10), "room", _ROOM_LABELS,
          "Some facts move two people at once and refer back to them as they. Say where a person is now."),
    _spec("qa14", "time-reasoning", "movement.qa14", (2, 14), "room",
          ["bedroom", "cinema", "kitchen", "office", "park", "school"],
          "Facts say where people went yesterday, this morning, this afternoon and this evening, in any order. Say where a person was before a given place.",
          min_facts=2),
    _spec("qa15", "basic-deduction", "animals.qa15", (8, 8), "animal", ["cat", "mouse", "sheep", "wolf"],
          "Facts say which kinds of animals fear which others, and what kind each named animal is. Say what a named animal is afraid of.",
          fixed_shape="8 facts"),
    _spec("qa16", "basic-induction", "animals.qa16", (9, 9), "colour", ["gray", "green", "white", "yellow"],
          "Facts give the kind and colour of animals. Infer the colour of an animal from others of its kind.",
          fixed_shape="9 facts"),
    _spec("qa17", "positional-reasoning", "relations.qa17", (2, 2), "yes_no", ["no", "yes"],
          "Facts place shapes left, right, above or below each other. Answer yes or no about their relative position.",
          fixed_shape="2 facts"),
    _spec("qa18", "size-reasoning", "relations.qa18", (5, 15), "yes_no", ["no", "yes"],
          "Facts say which boxes and things fit inside or are bigger than others. Answer yes or no about their sizes.",
          min_facts=2),
    _spec("qa19", "path-finding", "relations.qa19", (5, 5), "path",
          ["e,e", "e,n", "e,s", "n,e", "n,n", "n,w", "s,e", "s,s", "s,w", "w,n", "w,s", "w,w"],
          "Facts say how places lie relative to each other. Give the two steps of a path as compass letters, e.g. n,w.",
          min_facts=2),
    _spec("qa20", "agents-motivations", "motivations.qa20", (1, 12), "motivation",
          ["bedroom", "bored", "garden", "hungry", "kitchen", "thirsty", "tired"],
          "Facts describe how people feel and what they do. Answer where someone will go or why they did something."),
)}

TASKS = list(TASK_SPECS)
TASK_FILES: dict[str, str] = {name: spec.file for name, spec in TASK_SPECS.items()}


def check_task(task: str) -> str:
    """Return the canonical task name ("qa1"), accepting "QA1" or "1"; one-line error otherwise."""
    name = str(task).strip().lower()
    if name.isdigit():
        name = "qa" + name
    if name not in TASK_SPECS:
        raise UsageError(f"unknown task {task!r}; allowed: qa1 ... qa20")
    return name


def record_task(record: dict) -> str:
    """The bAbI task whose spec (labels, prompt) applies to ``record``: its ``babi_task`` when it
    has one (a record stored under another task name, e.g. ``rmt reproduce``'s "detect", made of
    qa1 facts), else its ``task``."""
    return record.get("babi_task") or record["task"]


def task_spec(task: str) -> TaskSpec:
    """The spec of ``task`` (any spelling :func:`check_task` accepts)."""
    return TASK_SPECS[check_task(task)]
