"""The benchmark prompt, from the toolkit's one prompt module (``rmt.babilong.prompts``).

Evaluation never writes its own prompt text: this module only adapts ``rmt.babilong.prompts`` to
the runner interface ``(record, chat) -> prompt`` and carries the user's prompt options (a prompt
file, switched-off parts) through.
"""

from __future__ import annotations

from functools import partial

from rmt import runs
from rmt.babilong import prompts
from rmt.babilong.prompts import prompt_set_name, resolve_prompts
from rmt.errors import UsageError


def benchmark_prompt(record: dict, chat: bool, **options):
    """The benchmark prompt for ``record``: chat messages when ``chat`` (the model's chat template
    is used, or it is an endpoint), one string otherwise. As in the official BABILong code, the
    whole benchmark prompt (instruction, examples, post-prompt, context, question) is the one user
    message; the chat template adds the turns around it. ``options`` go to ``rmt.babilong.prompts``
    (``prompts=`` a prompt file or dict, ``instruction=False``, ``examples=False``,
    ``post_prompt=False``, ``context_tags=False``, ``template=...``)."""
    if chat:
        return prompts.format_messages(record, **options)
    return prompts.format_prompt(record, **options)


# The sequence `rmt train` trains on: the haystack, a space, the question (then the answer).
TRAINING_TEMPLATE = "{context} {question}"
PLAIN_OPTIONS = {"instruction": False, "examples": False, "post_prompt": False, "context_tags": False,
                 "template": TRAINING_TEMPLATE}
STYLES = ("auto", "benchmark", "plain")


def resolve_style(style: str, model_spec: str) -> str:
    """``auto``: ``plain`` for checkpoints written by ``rmt train`` (they learn ``input question
    answer``, no instruction; recognised by the run's ``train_config.json`` in the model dir or its
    parent), ``benchmark`` for everything else."""
    if style not in STYLES:
        raise UsageError(f"unknown prompt style {style!r}; allowed: {', '.join(STYLES)}")
    if style == "auto":
        return "plain" if runs.trained_by_rmt_train(model_spec) else "benchmark"
    return style


def plain_prompt(record: dict, chat: bool, **options):
    """``input question`` as one string (the training format), built by ``rmt.babilong.prompts``."""
    return prompts.format_prompt(record, **{**PLAIN_OPTIONS, **options})


def prompt_fn(style: str = "benchmark", **options):
    """A ``(record, chat) -> prompt`` function with fixed options (none: the defaults). The prompts
    (``prompts=`` "builtin", "lm-eval", a file path or a dict) are read once here, not per record.
    The function's ``prompt_set`` attribute names what it asks, for the results store."""
    name = prompt_set_name(options.get("prompts"))
    if "prompts" in options:
        options["prompts"] = resolve_prompts(options["prompts"])
    if style == "plain":
        fn = partial(plain_prompt, **options)
        name = "plain"
    elif style == "benchmark":
        fn = partial(benchmark_prompt, **options)
    else:
        raise UsageError(f"unknown prompt style {style!r}; allowed: benchmark, plain")
    off = [part.replace("_", "-") for part in ("instruction", "examples", "post_prompt", "context_tags")
           if options.get(part) is False]
    fn.prompt_set = name + (f" (no {', no '.join(off)})" if off and style != "plain" else "")
    fn.chat_form = style != "plain"  # asks chat messages of a model with a chat template
    return fn
