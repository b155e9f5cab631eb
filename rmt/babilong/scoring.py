"""Score a model's answer against a BABILong target.

Two modes:

* ``official`` reproduces the benchmark's leaderboard rule, quirks included, so numbers are
  comparable with published ones: lowercase the output, keep the text before the first period, cut
  at ``<context>`` / ``<example>`` / ``Question`` (after lowercasing, the capitalised ``Question`` cut
  can never match: kept as in the reference), then look for the task's fixed labels as *substrings*,
  drop labels that also occur in the question, and accept only when the target is the single label
  left (for comma lists such as qa8's ``apple,milk``: every part present and nothing else).
  Substring matching means the qa7 answer ``none`` can never be scored correct (``one`` is inside it).
* ``strict`` applies the same rule with whole-word matching (labels are found only as separate
  words, a comma list as separate words too) and cuts at ``question`` in any case. It fixes the
  ``none``/``one`` clash and stops ``no`` matching inside ``north`` or ``nothing``.
"""

from __future__ import annotations

import re

from rmt.babilong.tasks import TASK_SPECS, check_task
from rmt.errors import UsageError

# Fixed answer labels per task, from the task specs (rmt.babilong.tasks).
TASK_LABELS: dict[str, list[str]] = {name: list(spec.labels) for name, spec in TASK_SPECS.items()}

MODES = ("official", "strict")


def preprocess_output(output: str, mode: str = "official") -> str:
    """The part of a model's output that is searched for labels."""
    output = output.lower()
    output = output.split(".")[0]  # first sentence only
    output = output.split("<context>")[0]  # the model started repeating the prompt
    output = output.split("<example>")[0]
    # The reference cuts at "Question" after lowercasing, which never matches; strict cuts for real.
    output = output.split("question" if mode == "strict" else "Question")[0]
    return output


def _contains(text: str, label: str, mode: str) -> bool:
    if mode == "official":
        return label in text
    # Whole words: the label (which may hold commas, e.g. "n,w") bounded by non-word characters.
    return re.search(r"(?<!\w)" + re.escape(label) + r"(?!\w)", text) is not None


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise UsageError(f"unknown scoring mode {mode!r}; allowed: {', '.join(MODES)}")


def labels_for(task: str) -> list[str]:
    return list(TASK_SPECS[check_task(task)].labels)


def compare_answers(target: str, output: str, question: str, task_labels, mode: str = "official") -> bool:
    """True when ``output`` names ``target`` and no other label (labels in the question ignored)."""
    _check_mode(mode)
    output = preprocess_output(output, mode)
    target = target.lower()
    question = question.lower()
    labels = {label.lower() for label in task_labels}
    in_question = {label for label in labels if _contains(question, label, mode)}
    in_output = {label for label in labels if _contains(output, label, mode)} - in_question
    if "," in target and len(target) > 3:  # a list (qa8); qa19's "n,w" (len 3) is a single label
        subtargets = target.split(",")
        return all(t in in_output for t in subtargets) and len(in_output) == len(subtargets)
    return target in in_output and len(in_output) == 1


def score(output: str, target: str, question: str, task: str, mode: str = "official") -> bool:
    """Is ``output`` a correct answer to ``question`` (gold ``target``) for bAbI task ``task``?"""
    return compare_answers(target, output, question, labels_for(task), mode)
