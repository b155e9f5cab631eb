"""The benchmark prompt, from the toolkit's one prompt module (``rmt.babilong.prompts``).

Evaluation never writes its own prompt text: this module only adapts ``rmt.babilong.prompts`` to
the runner interface ``(record, chat) -> prompt`` and carries the user's prompt options (a prompt
file, switched-off parts) through.
"""

from __future__ import annotations

from functools import partial


def benchmark_prompt(record: dict, chat: bool, **options):
    """The benchmark prompt for ``record``: chat messages when ``chat`` (the model has a chat
    template, or is an endpoint), one string otherwise. ``options`` go to ``rmt.babilong.prompts``
    (e.g. ``prompt_file=...``, ``examples=False``)."""
    from rmt.babilong import prompts

    if chat:
        return prompts.format_messages(record, **options)
    return prompts.format_prompt(record, **options)


def prompt_fn(**options):
    """A ``(record, chat) -> prompt`` function with fixed options (none: the defaults)."""
    return partial(benchmark_prompt, **options) if options else benchmark_prompt
