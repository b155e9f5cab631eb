"""The default CPU thread count: one per core not already busy, never torch's one-per-core on a busy machine."""

import os

import pytest
import torch

import rmt.threads
from rmt.threads import default_threads
from tests.cli_util import run_cli


@pytest.fixture
def machine(monkeypatch):
    """A machine of ``cores`` cores with a 1-minute load average of ``load``."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)

    def make(cores, load):
        monkeypatch.setattr(rmt.threads, "available_cores", lambda: cores)
        monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))

    return make


@pytest.mark.parametrize("cores, load, expected", [
    (2, 0.1, 2),    # idle: every core
    (2, 1.2, 1),    # one core busy
    (2, 7.9, 1),    # a shared machine under load: one thread, never less
    (16, 4.0, 12),
    (16, 40.0, 1),
])
def test_one_thread_per_core_not_already_busy(machine, cores, load, expected):
    machine(cores, load)
    assert default_threads() == expected


def test_processes_of_a_data_parallel_run_share_the_cores(machine, monkeypatch):
    machine(16, 0.0)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert default_threads() == 4


def test_omp_num_threads_set_by_the_user_wins(machine, monkeypatch):
    machine(2, 9.0)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_threads() == 3


@pytest.fixture
def keep_torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_commands_use_the_default_when_no_threads_are_given(capsys, machine, keep_torch_threads, tmp_path):
    machine(2, 5.0)  # busy: torch's own choice would be 2
    torch.set_num_threads(2)
    code, out, err = run_cli(capsys, "demo", "--tokens", "200", "--segment-size", "50", "--hidden", "16",
                             "--vocab", "50", "--layers", "1")
    assert code == 0, err
    assert torch.get_num_threads() == 1
    code, _, err = run_cli(capsys, "demo", "--tokens", "200", "--segment-size", "50", "--hidden", "16",
                           "--vocab", "50", "--layers", "1", "--threads", "2")
    assert code == 0 and torch.get_num_threads() == 2  # asked for: given


def test_training_uses_the_default_when_threads_are_not_set(machine, keep_torch_threads, tmp_path):
    from rmt.training.config import TrainConfig
    from rmt.training.trainer import Trainer
    from tests.training.conftest import TINY

    machine(2, 5.0)
    torch.set_num_threads(2)
    trainer = Trainer(TrainConfig.from_dict({**TINY, "threads": None, "output_dir": str(tmp_path / "run")}))
    assert trainer.threads == 1 and torch.get_num_threads() == 1
