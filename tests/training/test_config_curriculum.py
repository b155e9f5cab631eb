import json

import pytest

from rmt.training.config import TrainConfig
from rmt.training.curriculum import Curriculum


def test_curriculum_that_goes_down_is_rejected():
    with pytest.raises(ValueError, match=r"curriculum goes down \(4 -> 2\)"):
        TrainConfig(curriculum=[1, 4, 2])


def test_unknown_task_is_rejected_with_the_allowed_ones():
    with pytest.raises(ValueError, match="unknown task 'qa99'.*qa1.*memorize.*lm"):
        TrainConfig(task="qa99")


def test_config_file_round_trip_yaml_and_json(tmp_path):
    cfg = TrainConfig(task="detect", curriculum=[1, 2, 8], n_facts=[1, 3], lr=5e-4, memory=False)
    cfg.save(tmp_path / "c.json")
    assert TrainConfig.from_file(tmp_path / "c.json") == cfg
    (tmp_path / "c.yaml").write_text("task: detect\ncurriculum: [1, 2, 8]\nn_facts: [1, 3]\nlr: 0.0005\nmemory: false\n")
    assert TrainConfig.from_file(tmp_path / "c.yaml") == cfg
    (tmp_path / "bad.yaml").write_text("segment_sise: 3\n")
    with pytest.raises(ValueError, match="unknown training config keys \\['segment_sise'\\]"):
        TrainConfig.from_file(tmp_path / "bad.yaml")


def test_curriculum_moves_on_after_the_step_budget():
    cur = Curriculum([1, 2, 4], stage_steps=3)
    seen = []
    step = 0
    while not cur.finished:
        seen.append(cur.segments_for_step(step))
        step += 1
        cur.advance(step)
    assert seen == [1, 1, 1, 2, 2, 2, 4, 4, 4]


def test_curriculum_moves_on_early_when_accuracy_passes_the_threshold():
    cur = Curriculum([1, 2], stage_steps=100, threshold=0.9)
    assert not cur.advance(5, accuracy=0.5)
    assert cur.advance(6, accuracy=0.95)
    assert cur.segments == 2 and cur.stage_start == 6
    state = cur.state_dict()
    again = Curriculum([1, 2], stage_steps=100, threshold=0.9)
    again.load_state_dict(state)
    assert again.segments == 2 and again.stage_start == 6


def test_vary_n_segments_draws_within_the_stage_and_depends_only_on_the_step():
    cur = Curriculum([1, 2, 8], stage_steps=10, vary_n_segments=True, seed=3)
    cur.stage = 2
    draws = [cur.segments_for_step(s) for s in range(200)]
    assert set(draws) == set(range(1, 9))
    assert draws == [cur.segments_for_step(s) for s in range(200)]
