"""The world simulator: every answer re-derived from the facts by an independent solver."""

import random

import pytest

from rmt.babilong import load_babi
from rmt.babilong.scoring import TASK_LABELS
from rmt.babilong.tasks import TASKS
from rmt.babilong.worlds import SIMULATORS, simulate, simulate_text

from .solvers import SOLVERS

# bAbI's own files disagree with a straight reading in a few questions (qa5: a later give by the
# same pair; qa16: two animals of one kind with different colours). Everything else must match.
REAL_DATA_MISMATCHES_ALLOWED = {"qa5": 2, "qa16": 5}


def _same(answer, target, task):
    if task == "qa8":  # bAbI lists are sets: its order is not the order of getting things
        return sorted(answer.split(",")) == sorted(target.split(","))
    return answer == target


@pytest.mark.parametrize("task", TASKS)
def test_solver_agrees_with_real_babi(task, babi_dir):
    samples = load_babi(task, "test", babi_dir)
    wrong = [s for s in samples if not _same(SOLVERS[task](s.facts, s.question), s.answer, task)]
    assert len(wrong) <= REAL_DATA_MISMATCHES_ALLOWED.get(task, 0)


@pytest.mark.parametrize("task", TASKS)
def test_simulated_answers_are_right(task):
    assert task in SIMULATORS
    rng = random.Random(f"test:{task}")
    for _ in range(200):
        sample = simulate(task, rng)
        assert SOLVERS[task](sample.facts, sample.question) == sample.answer, (sample.facts, sample.question)
        parts = sample.answer.split(",") if task == "qa8" else [sample.answer]
        assert all(part in TASK_LABELS[task] for part in parts)
        assert sample.supporting and all(0 <= i < len(sample.facts) for i in sample.supporting)


@pytest.mark.parametrize("task", ["qa1", "qa2", "qa3", "qa5", "qa7", "qa8"])
def test_fact_count_is_configurable(task):
    rng = random.Random(0)
    for n in (4, 7, 40):
        assert len(simulate(task, rng, n).facts) == n
    lengths = {len(simulate(task, rng, (4, 7)).facts) for _ in range(50)}
    assert lengths <= {4, 5, 6, 7} and len(lengths) > 1


def test_vocabulary_mirrors_babi(babi_dir):
    real = {w for s in load_babi("qa2", "test", babi_dir) for f in s.facts for w in f.split()}
    rng = random.Random(1)
    simulated = {w for _ in range(200) for f in simulate("qa2", rng).facts for w in f.split()}
    assert simulated <= real  # every word the simulator writes for qa2 occurs in bAbI's qa2


def test_simulated_text_is_babi_format_and_seeded():
    a = simulate_text("qa3", random.Random(5))
    assert a == simulate_text("qa3", random.Random(5))
    assert a != simulate_text("qa3", random.Random(6))
    lines = a.splitlines()
    assert all(line.split(" ", 1)[0] == str(i + 1) for i, line in enumerate(lines))
    assert lines[-1].count("\t") == 2


def test_bad_fact_counts():
    with pytest.raises(ValueError, match="qa5 needs at least 4"):
        simulate("qa5", random.Random(0), 2)
    with pytest.raises(ValueError, match="n_facts"):
        simulate("qa1", random.Random(0), 0)
    with pytest.raises(ValueError, match="n_facts"):
        simulate("qa1", random.Random(0), (5, 2))


@pytest.mark.parametrize("task", ["qa1", "qa2", "qa3", "qa4", "qa5", "qa11", "qa12", "qa13", "qa14"])
def test_supporting_facts_name_the_answer(task):
    """The answer (a room, person or object) is stated in one of the supporting facts."""
    rng = random.Random(f"support:{task}")
    for _ in range(100):
        s = simulate(task, rng)
        support = " ".join(s.facts[i] for i in s.supporting)
        assert s.answer in support, (s.facts, s.question, s.answer, s.supporting)
