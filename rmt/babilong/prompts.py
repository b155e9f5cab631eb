"""Prompts for BABILong records: instruction, few-shot examples, post-prompt, the context in
``<context>`` tags, and the question. Every part can be switched off; a prompt file (JSON or YAML)
replaces the built-in wording, e.g. with the benchmark's published prompts for leaderboard-comparable
runs. The built-in instructions are our own words; the examples are stories from our simulator
(fixed seed), so they are correct by construction.

Named prompt sets: ``"builtin"`` (our wording, the default) and ``"lm-eval"`` (the instruction and
few-shot examples of lm-evaluation-harness's babilong tasks, read from the installed ``lm_eval`` at
run time by ``rmt.babilong.lm_eval``; leaderboard-comparable wording, in our layout: ``<example>``
blocks, ``<context>`` tags, ``Question:``) and ``"lm-eval-harness"`` (the same wording in lm-eval's own
layout: the very text lm-eval's babilong tasks send, so answers can be cross-checked per sample).

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

import yaml

from rmt.babilong.lm_eval import lm_eval_harness_prompts, lm_eval_prompts
from rmt.babilong.tasks import ANSWER_KINDS, TASK_SPECS, check_task, record_task, task_spec
from rmt.babilong.worlds import simulate
from rmt.errors import UsageError

TEMPLATE = "{instruction}\n\n{examples}\n\n{post_prompt}\n\n<context>\n{context}\n</context>\n\nQuestion: {question}"
NO_TAGS_TEMPLATE = "{instruction}\n\n{examples}\n\n{post_prompt}\n\n{context}\n\nQuestion: {question}"

# Views of the task specs (rmt.babilong.tasks), where the wording lives.
INSTRUCTIONS = {name: spec.instruction for name, spec in TASK_SPECS.items()}
POST_PROMPTS = ANSWER_KINDS
ANSWER_KIND = {name: spec.answer for name, spec in TASK_SPECS.items()}
PARTS = ("instruction", "examples", "post_prompt")
PROMPT_SETS = ("builtin", "lm-eval", "lm-eval-harness")


def resolve_prompts(prompts):
    """A prompts argument -> None (built-in) or a prompt dict: ``None``/``"builtin"``, ``"lm-eval"``,
    a dict, or the path of a JSON/YAML prompt file."""
    if prompts is None or isinstance(prompts, dict):
        return prompts
    if prompts == "builtin":
        return None
    if prompts == "lm-eval":
        return lm_eval_prompts()
    if prompts == "lm-eval-harness":
        return lm_eval_harness_prompts()
    return load_prompt_file(prompts)


def prompt_set_name(prompts) -> str:
    """How a results store names the prompts used: builtin, lm-eval, file:NAME or dict."""
    if prompts is None or prompts in PROMPT_SETS:
        return prompts or "builtin"
    if isinstance(prompts, dict):
        return "dict"
    return f"file:{Path(prompts).name}"


@lru_cache(maxsize=None)
def builtin_examples(task: str, n: int = 2) -> str:
    """``n`` short worked examples of ``task`` from the simulator (fixed seed)."""
    rng = random.Random(f"prompt-examples:{task}")
    blocks = []
    for _ in range(n):
        sample = simulate(task, rng, task_spec(task).example_facts)
        blocks.append("<example>\n" + " ".join(sample.facts) + f"\nQuestion: {sample.question}\n"
                      f"Answer: {sample.answer}\n</example>")
    return "\n".join(blocks)


def load_prompt_file(path: str | os.PathLike) -> dict:
    """A JSON or YAML prompt file -> dict (see the module doc for its shape). A file that is not
    UTF-8, YAML or JSON is one ValueError naming the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"prompt file not found: {path} (or a prompt set: {', '.join(PROMPT_SETS)})")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise UsageError(f"prompt file {path}, line {line}: not UTF-8 text (byte {raw[exc.start]:#04x})") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f", line {mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or (str(exc).strip().splitlines() or ["invalid"])[0]
            raise UsageError(f"prompt file {path}{where}: not valid YAML ({problem})") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"prompt file {path}, line {exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise UsageError(f"prompt file {path} must hold a mapping of task -> parts")
    return data


def prompt_parts(task: str, prompts: dict | str | os.PathLike | None = None) -> dict:
    """The instruction / examples / post-prompt of ``task``, with overrides from ``prompts``."""
    task = check_task(task)
    spec = TASK_SPECS[task]
    parts = {"instruction": spec.instruction, "examples": builtin_examples(task), "post_prompt": spec.post_prompt}
    overrides = resolve_prompts(prompts)
    if overrides is not None:
        for key, value in (overrides.get(task) or {}).items():
            if key not in PARTS:
                raise UsageError(f"prompt part {key!r} of {task} unknown; allowed: {', '.join(PARTS)}")
            parts[key] = value
    return parts


def format_prompt(record: dict, *, instruction: bool = True, examples: bool = True, post_prompt: bool = True,
                  context_tags: bool = True, prompts: dict | str | os.PathLike | None = None,
                  template: str | None = None) -> str:
    """The prompt for one record; empty parts are dropped together with their blank lines."""
    overrides = resolve_prompts(prompts)
    parts = prompt_parts(record_task(record), overrides)
    if template is None:
        template = (overrides or {}).get("template") or (TEMPLATE if context_tags else NO_TAGS_TEMPLATE)
    values = {
        "instruction": parts["instruction"] if instruction else "",
        "examples": parts["examples"] if examples else "",
        "post_prompt": parts["post_prompt"] if post_prompt else "",
        "context": record["input"],
        "question": record["question"],
    }
    if (overrides or {}).get("strip_record"):  # lm-eval's doc_to_text takes input and question stripped
        values["context"], values["question"] = values["context"].strip(), values["question"].strip()
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
    overrides = resolve_prompts(options.get("prompts"))
    instruction = prompt_parts(record_task(record), overrides)["instruction"] if options.get("instruction", True) else ""
    user = format_prompt(record, **{**options, "instruction": False})
    messages = [{"role": "system", "content": instruction}] if instruction else []
    return messages + [{"role": "user", "content": user}]
