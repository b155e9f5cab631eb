"""Prompts for BABILong records: instruction, few-shot examples, post-prompt, the context in
``<context>`` tags, and the question. Every part can be switched off; a prompt file (JSON or YAML)
replaces the built-in wording, e.g. with the benchmark's published prompts for leaderboard-comparable
runs. The built-in instructions are our own words; the examples are stories from our simulator
(fixed seed), so they are correct by construction.

A prompt file maps task names to parts (any part may be omitted) and may set ``template``::

    {"template": "{instruction}\\n\\n{examples}\\n\\n{post_prompt}\\n\\n<context>\\n{context}\\n</context>\\n\\nQuestion: {question}",
     "qa1": {"instruction": "...", "examples": "...", "post_prompt": "..."}}
"""

from __future__ import annotations

import json
import os
import random
from functools import lru_cache
from pathlib import Path

from rmt.babilong.tasks import check_task

TEMPLATE = "{instruction}\n\n{examples}\n\n{post_prompt}\n\n<context>\n{context}\n</context>\n\nQuestion: {question}"
NO_TAGS_TEMPLATE = "{instruction}\n\n{examples}\n\n{post_prompt}\n\n{context}\n\nQuestion: {question}"

_BASE = ("You will read a long text. Hidden in it are short facts about people, places and things; "
         "the rest is unrelated. ")
INSTRUCTIONS = {
    "qa1": _BASE + "Use the facts to say where a person is now: the last place they went to is where they are.",
    "qa2": _BASE + "Say where an object is: it is wherever the person carrying it went last, or where it was put down.",
    "qa3": _BASE + "Follow an object as people carry it from room to room, and say which room it was in just before a given room.",
    "qa4": _BASE + "The facts say how rooms lie relative to each other (north, south, east, west). Answer which room stands in the asked relation.",
    "qa5": _BASE + "People pass objects to each other. Answer who gave what to whom, using the most recent matching handover.",
    "qa6": _BASE + "Answer whether a person is in a given place right now, going by the last place they moved to.",
    "qa7": _BASE + "Count the objects a person is holding now: picking up or receiving adds one, dropping or handing over removes one.",
    "qa8": _BASE + "List the objects a person is holding now, in the order they got them.",
    "qa9": _BASE + "Some facts say where a person is not. Answer whether a person is in a given place now.",
    "qa10": _BASE + "Some facts are uncertain (\"either here or there\"). Answer yes, no, or maybe when the facts cannot decide.",
    "qa11": _BASE + "Some facts refer to a person as he or she. Work out who is meant and say where the person is now.",
    "qa12": _BASE + "Some facts move two people at once. Say where a person is now.",
    "qa13": _BASE + "Some facts move two people at once and refer back to them as they. Say where a person is now.",
    "qa14": _BASE + "Facts say where people went yesterday, this morning, this afternoon and this evening, in any order. Say where a person was before a given place.",
    "qa15": _BASE + "Facts say which kinds of animals fear which others, and what kind each named animal is. Say what a named animal is afraid of.",
    "qa16": _BASE + "Facts give the kind and colour of animals. Infer the colour of an animal from others of its kind.",
    "qa17": _BASE + "Facts place shapes left, right, above or below each other. Answer yes or no about their relative position.",
    "qa18": _BASE + "Facts say which boxes and things fit inside or are bigger than others. Answer yes or no about their sizes.",
    "qa19": _BASE + "Facts say how places lie relative to each other. Give the two steps of a path as compass letters, e.g. n,w.",
    "qa20": _BASE + "Facts describe how people feel and what they do. Answer where someone will go or why they did something.",
}
POST_PROMPTS = {
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
ANSWER_KIND = {
    "qa1": "room", "qa2": "room", "qa3": "room", "qa4": "room", "qa5": "name_or_object", "qa6": "yes_no",
    "qa7": "count", "qa8": "list", "qa9": "yes_no", "qa10": "yes_no_maybe", "qa11": "room", "qa12": "room",
    "qa13": "room", "qa14": "room", "qa15": "animal", "qa16": "colour", "qa17": "yes_no", "qa18": "yes_no",
    "qa19": "path", "qa20": "motivation",
}
PARTS = ("instruction", "examples", "post_prompt")


@lru_cache(maxsize=None)
def builtin_examples(task: str, n: int = 2) -> str:
    """``n`` short worked examples of ``task`` from the simulator (fixed seed)."""
    from rmt.babilong.worlds import SIMULATORS, simulate

    if task not in SIMULATORS:
        return ""
    rng = random.Random(f"prompt-examples:{task}")
    blocks = []
    for _ in range(n):
        sample = simulate(task, rng, (2, 6) if task not in ("qa3",) else (4, 8))
        blocks.append("<example>\n" + " ".join(sample.facts) + f"\nQuestion: {sample.question}\n"
                      f"Answer: {sample.answer}\n</example>")
    return "\n".join(blocks)


def load_prompt_file(path: str | os.PathLike) -> dict:
    """A JSON or YAML prompt file -> dict (see the module doc for its shape)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"prompt file {path} must hold a mapping of task -> parts")
    return data


def prompt_parts(task: str, prompts: dict | str | os.PathLike | None = None) -> dict:
    """The instruction / examples / post-prompt of ``task``, with overrides from ``prompts``."""
    task = check_task(task)
    parts = {"instruction": INSTRUCTIONS[task], "examples": builtin_examples(task),
             "post_prompt": POST_PROMPTS[ANSWER_KIND[task]]}
    if prompts is not None:
        overrides = prompts if isinstance(prompts, dict) else load_prompt_file(prompts)
        for key, value in (overrides.get(task) or {}).items():
            if key not in PARTS:
                raise ValueError(f"prompt part {key!r} of {task} unknown; allowed: {', '.join(PARTS)}")
            parts[key] = value
    return parts


def format_prompt(record: dict, *, instruction: bool = True, examples: bool = True, post_prompt: bool = True,
                  context_tags: bool = True, prompts: dict | str | os.PathLike | None = None,
                  template: str | None = None) -> str:
    """The prompt for one record; empty parts are dropped together with their blank lines."""
    overrides = prompts if isinstance(prompts, dict) or prompts is None else load_prompt_file(prompts)
    parts = prompt_parts(record["task"], overrides)
    if template is None:
        template = (overrides or {}).get("template") or (TEMPLATE if context_tags else NO_TAGS_TEMPLATE)
    values = {
        "instruction": parts["instruction"] if instruction else "",
        "examples": parts["examples"] if examples else "",
        "post_prompt": parts["post_prompt"] if post_prompt else "",
        "context": record["input"],
        "question": record["question"],
    }
    # Fill each part into a unique marker first, so blank parts can be removed without touching the context.
    markers = {k: f"\x00{k}\x00" for k in values}
    text = template.format(**markers)
    for key in ("instruction", "examples", "post_prompt"):
        if not values[key]:
            text = text.replace(markers[key] + "\n\n", "").replace(markers[key], "")
    for key, value in values.items():
        text = text.replace(markers[key], value)
    return text


def format_messages(record: dict, *, system: bool = False, **options) -> list[dict]:
    """Chat form of ``format_prompt`` for ``tokenizer.apply_chat_template``: one user message, or
    the instruction as a system message and the rest as the user message when ``system=True``."""
    if not system:
        return [{"role": "user", "content": format_prompt(record, **options)}]
    prompts = options.get("prompts")
    overrides = prompts if isinstance(prompts, dict) or prompts is None else load_prompt_file(prompts)
    instruction = prompt_parts(record["task"], overrides)["instruction"] if options.get("instruction", True) else ""
    user = format_prompt(record, **{**options, "instruction": False})
    messages = [{"role": "system", "content": instruction}] if instruction else []
    return messages + [{"role": "user", "content": user}]
