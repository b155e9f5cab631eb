"""The benchmark prompt, from the toolkit's one prompt module (``rmt.babilong.prompts``).

Evaluation never writes its own prompt text: this module only adapts ``rmt.babilong.prompts`` to
the runner interface ``(record, chat) -> prompt`` and carries the user's prompt options (a prompt
file, switched-off parts) through.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path


def benchmark_prompt(record: dict, chat: bool, **options):
    """The benchmark prompt for ``record``: chat messages when ``chat`` (the model has a chat
    template, or is an endpoint), one string otherwise. ``options`` go to ``rmt.babilong.prompts``
    (``prompts=`` a prompt file or dict, ``instruction=False``, ``examples=False``,
    ``post_prompt=False``, ``context_tags=False``, ``template=...``)."""
    from rmt.babilong import prompts

    if chat:
        return prompts.format_messages(record, **options)
    return prompts.format_prompt(record, **options)


def prompt_fn(**options):
    """A ``(record, chat) -> prompt`` function with fixed options (none: the defaults). A prompt
    file given as ``prompts=PATH`` is read once here, not per record."""
    if isinstance(options.get("prompts"), (str, Path)):
        from rmt.babilong.prompts import load_prompt_file

        options["prompts"] = load_prompt_file(options["prompts"])
    return partial(benchmark_prompt, **options) if options else benchmark_prompt
