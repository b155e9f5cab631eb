"""A memory kind owns its options, their checks and its positions: a kind registered from this test
file (one class, its options' line and one registry line, nothing in the package edited) gets its options into
RMTConfig, TrainConfig and `rmt train`'s flags, its checks run, and the window is sized by it."""

import pytest
import torch

from rmt import RMTConfig, RecurrentMemoryTransformer
from rmt.memory import MEMORY_KINDS
from rmt.memory.kind_options import KIND_OPTIONS
from rmt.memory.kinds import RMTKind
from rmt.memory.kinds.base import Option
from tests.memory.tiny_models import random_ids, tiny_causal_lm

PADDING = 5  # positions the toy kind reserves beyond RMT's [memory; tokens; memory]


class DampedMemory(RMTKind):
    """RMT whose memory is scaled by ``damping`` each time it is read; it reserves PADDING more
    positions than it uses (so a test can see the window is the kind's answer)."""

    name = "damped"
    options = RMTKind.options + (
        Option("damping", 0.5, float, minimum=0, help="Damped memory: factor applied to the memory at each read."),
    )

    @classmethod
    def check_config(cls, config):
        if config.damping > 1:
            raise ValueError(f"damping must be <= 1 (a factor that damps), got {config.damping!r}")

    @classmethod
    def extra_positions(cls, adapter, config):
        return super().extra_positions(adapter, config) + PADDING

    def read(self, state):
        return state.memory * self.config.damping


@pytest.fixture
def damped_kind(monkeypatch):
    monkeypatch.setitem(KIND_OPTIONS, "damped", DampedMemory.options)  # its options, declared torch-free
    monkeypatch.setitem(MEMORY_KINDS, "damped", DampedMemory)  # the one registry line
    import typer

    import rmt.cli
    from rmt.cli import train as train_cli

    app = typer.Typer(add_completion=False)  # `rmt train`'s flags are made when the command is registered
    train_cli.register(app)
    monkeypatch.setattr(rmt.cli, "app", app)


def test_a_kinds_options_reach_rmt_config_with_their_checks(damped_kind, tmp_path):
    config = RMTConfig(memory_kind="damped", num_mem_tokens=2, segment_size=5, damping=0.25)
    assert config.damping == 0.25 and config.to_dict()["damping"] == 0.25
    assert RMTConfig().damping == 0.5  # every kind's options have their defaults in every config
    with pytest.raises(ValueError, match="damping must be >= 0, got -1.0"):
        RMTConfig(memory_kind="damped", damping=-1.0)
    with pytest.raises(ValueError, match="damping must be a finite number, got 'x'"):
        RMTConfig(memory_kind="damped", damping="x")
    with pytest.raises(ValueError, match=r"damping must be <= 1 \(a factor that damps\), got 2.0"):
        RMTConfig(memory_kind="damped", damping=2.0)  # the kind's own check_config
    model = RecurrentMemoryTransformer.wrap(tiny_causal_lm("gpt2"), config).eval()
    ids = random_ids(2, 12)
    with torch.no_grad():
        out = model(ids)
    assert out.logits.shape[:2] == (2, 12)
    model.save_pretrained(tmp_path)
    loaded = RecurrentMemoryTransformer.from_pretrained(tmp_path)
    assert loaded.config == config
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, out.logits)


def test_the_window_is_the_kinds_answer(damped_kind):
    # tiny GPT-2: 128 learned positions; damped with 4 memory tokens takes 2 * 4 + PADDING of them
    with pytest.raises(ValueError, match=f"allowed segment_size <= {128 - 8 - PADDING}"):
        RecurrentMemoryTransformer.wrap(tiny_causal_lm("gpt2"), RMTConfig(memory_kind="damped", num_mem_tokens=4, segment_size=116))
    from rmt.training.config import TrainConfig
    from rmt.training.trainer import segment_window

    assert segment_window(TrainConfig.from_dict(dict(memory_kind="damped", num_mem_tokens=4, segment_size=16))) == 16 + 8 + PADDING


def test_a_kinds_options_are_training_settings_and_flags(damped_kind, tmp_path, monkeypatch, capsys):
    from rmt.training.config import TrainConfig

    cfg = TrainConfig.from_dict(dict(memory_kind="damped", damping=0.125))
    assert cfg.rmt.damping == 0.125 and cfg.to_dict()["damping"] == 0.125
    from rmt.training import config as training_config

    assert "damping" in training_config.RESUME_KEYS
    assert cfg.resume_mismatch(TrainConfig.from_dict(dict(memory_kind="damped"))) == ["damping"]
    (tmp_path / "run.yaml").write_text("memory_kind: damped\ndamping: 1e-1\n")  # PyYAML: the string '1e-1'
    assert TrainConfig.from_file(tmp_path / "run.yaml").rmt.damping == 0.1

    seen = {}
    from rmt.training import trainer

    class Stop(Exception):
        pass

    def capture(cfg, resume=False):
        seen["cfg"] = cfg
        raise Stop

    monkeypatch.setattr(trainer, "Trainer", capture)
    from rmt.cli import main

    with pytest.raises(Stop):
        main(["train", "--memory-kind", "damped", "--damping", "0.75", "--output-dir", str(tmp_path / "out")])
    assert seen["cfg"].rmt.memory_kind == "damped" and seen["cfg"].rmt.damping == 0.75


@pytest.mark.parametrize("memory_kind", sorted(MEMORY_KINDS))
def test_no_weight_decay_names_are_the_kinds_parameters(memory_kind):
    # What a kind keeps out of weight decay names its own parameters (the memory tokens; ARMT's
    # stacked gate bias), the names the trainer's param_groups spares today.
    model = RecurrentMemoryTransformer.wrap(tiny_causal_lm(), RMTConfig(memory_kind=memory_kind, num_mem_tokens=2, segment_size=8))
    names = dict(model.memory_kind.named_parameters())
    assert set(model.memory_kind.no_weight_decay) <= set(names)
    assert "memory" in model.memory_kind.no_weight_decay
    assert ("b_gate" in model.memory_kind.no_weight_decay) == (memory_kind == "armt")


def test_every_kind_reads_its_options_from_the_torch_free_declaration():
    assert list(KIND_OPTIONS) == list(MEMORY_KINDS)
    for name, kind in MEMORY_KINDS.items():
        assert kind.options is KIND_OPTIONS[name]
