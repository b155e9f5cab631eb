"""The curriculum: 1 segment, then 2, 4, ... up to N; each stage ends after a step budget or once the
validation accuracy reaches a threshold. The model and optimizer simply carry on into the next
stage (warm start), as in the RMT papers.

The schedule is a small state object (stage index, step the stage began) saved in every checkpoint,
so a resumed run is in the same stage at the same step.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass
class Curriculum:
    stages: list[int]
    stage_steps: int
    threshold: float | None = None
    vary_n_segments: bool = False
    seed: int = 0
    stage: int = 0
    stage_start: int = 0  # global step at which the current stage began

    @property
    def segments(self) -> int:
        """Segments of the current stage (the most a batch of this stage has)."""
        return self.stages[self.stage]

    @property
    def finished(self) -> bool:
        return self.stage >= len(self.stages)

    def segments_for_step(self, step: int) -> int:
        """Segments of the batch at ``step``: the stage's count, or with ``vary_n_segments`` a
        uniform draw from 1..stage count that depends only on (seed, step)."""
        if not self.vary_n_segments:
            return self.segments
        return random.Random(f"{self.seed}:segments:{step}").randint(1, self.segments)

    def advance(self, step: int, accuracy: float | None = None) -> bool:
        """Called after optimizer step ``step`` (1-based count of steps done). Moves to the next
        stage when the step budget is spent or ``accuracy`` reached the threshold; True if it moved."""
        spent = step - self.stage_start >= self.stage_steps
        passed = self.threshold is not None and accuracy is not None and accuracy >= self.threshold
        if spent or passed:
            self.stage += 1
            self.stage_start = step
            return True
        return False

    def state_dict(self) -> dict:
        return {"stage": self.stage, "stage_start": self.stage_start}

    def load_state_dict(self, state: dict) -> None:
        self.stage, self.stage_start = int(state["stage"]), int(state["stage_start"])
