"""Tiny training runs: a 1-layer GPT-2 of width 32 on short qa1 samples, seconds each."""

import pytest

from rmt.training.config import TrainConfig

TINY = dict(task="qa1", n_facts=[1, 2], segment_size=16, num_mem_tokens=2, n_layer=1, n_embd=32, n_head=2,
            curriculum=[1, 2], stage_steps=6, batch_size=4, lr=3e-3, eval_every=3, eval_samples=4,
            eval_batch_size=4, save_every=3, log_every=1, threads=1, progress=False, vary_n_segments=True)


@pytest.fixture
def tiny_config(tmp_path):
    def make(**overrides):
        settings = dict(TINY, output_dir=str(tmp_path / "run"))
        settings.update(overrides)
        return TrainConfig.from_dict(settings)

    return make
