"""One spec per task: scoring, prompts, the simulator and training all read rmt.babilong.tasks."""

import dataclasses
import random

import pytest

from rmt.babilong import prompts, scoring, tasks, worlds
from rmt.babilong.prompts import format_prompt, prompt_parts
from rmt.babilong.tasks import ANSWER_KINDS, TASK_SPECS, TASKS, task_spec


@pytest.mark.parametrize("task", TASKS)
def test_every_task_has_a_working_spec(task):
    spec = task_spec(task)
    assert spec.answer in ANSWER_KINDS and spec.labels and spec.instruction
    assert spec.file.startswith(f"{task}_")
    lo, hi = spec.facts
    assert 1 <= spec.min_facts <= lo <= hi
    sample = worlds.simulate(task, random.Random(0), spec.example_facts)
    parts = sample.answer.split(",") if spec.answer == "list" else [sample.answer]
    assert all(p in spec.labels for p in parts)


@pytest.mark.parametrize("task", TASKS)
def test_benchmark_prompt_builds_for_every_task(task):
    # qa5 needs 4 facts per story: its few-shot examples used to ask for 2..6 and raised
    record = {"task": task, "input": "Some text.", "question": "Where is Mary?"}
    text = format_prompt(record)
    assert "<example>" in text and task_spec(task).post_prompt in text


def test_a_new_task_is_one_spec(monkeypatch):
    """A task added to TASK_SPECS is scored, prompted, simulated and trainable without other edits."""
    new = dataclasses.replace(TASK_SPECS["qa1"], name="qa21", labels=("attic", "cellar"),
                              instruction="Say where.", answer="room")
    monkeypatch.setitem(TASK_SPECS, "qa21", new)
    assert tasks.check_task("21") == "qa21"
    assert scoring.labels_for("qa21") == ["attic", "cellar"]
    assert scoring.score("the attic", target="attic", question="Where is Bob?", task="qa21")
    assert not scoring.score("the kitchen", target="attic", question="Where is Bob?", task="qa21")
    assert prompt_parts("qa21")["instruction"] == "Say where."
    assert worlds.simulate("qa21", random.Random(0)).answer  # the world named by the spec writes it


def test_views_agree_with_the_specs():
    from rmt.training.config import BABILONG_TASKS

    assert list(BABILONG_TASKS) == TASKS
    assert scoring.TASK_LABELS == {t: list(s.labels) for t, s in TASK_SPECS.items()}
    assert prompts.ANSWER_KIND == {t: s.answer for t, s in TASK_SPECS.items()}
    assert worlds.SIMULATORS == {t: s.simulator for t, s in TASK_SPECS.items()}
    # one list of rooms: the labels are the simulator's rooms
    assert set(task_spec("qa1").labels) == set(tasks.ROOMS) == set(worlds.base.ROOMS)
