"""The 20 bAbI tasks: names, file stems, validation."""

from __future__ import annotations

TASK_FILES: dict[str, str] = {
    "qa1": "qa1_single-supporting-fact",
    "qa2": "qa2_two-supporting-facts",
    "qa3": "qa3_three-supporting-facts",
    "qa4": "qa4_two-arg-relations",
    "qa5": "qa5_three-arg-relations",
    "qa6": "qa6_yes-no-questions",
    "qa7": "qa7_counting",
    "qa8": "qa8_lists-sets",
    "qa9": "qa9_simple-negation",
    "qa10": "qa10_indefinite-knowledge",
    "qa11": "qa11_basic-coreference",
    "qa12": "qa12_conjunction",
    "qa13": "qa13_compound-coreference",
    "qa14": "qa14_time-reasoning",
    "qa15": "qa15_basic-deduction",
    "qa16": "qa16_basic-induction",
    "qa17": "qa17_positional-reasoning",
    "qa18": "qa18_size-reasoning",
    "qa19": "qa19_path-finding",
    "qa20": "qa20_agents-motivations",
}
TASKS = list(TASK_FILES)


def check_task(task: str) -> str:
    """Return the canonical task name ("qa1"), accepting "QA1" or "1"; one-line error otherwise."""
    name = str(task).strip().lower()
    if name.isdigit():
        name = "qa" + name
    if name not in TASK_FILES:
        raise ValueError(f"unknown task {task!r}; allowed: qa1 ... qa20")
    return name
