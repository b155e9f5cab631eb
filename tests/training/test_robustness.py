"""Training from an RMT checkpoint, and resuming past damaged files."""

import json

import pytest
import torch

from rmt.training.checkpoint import list_checkpoints
from rmt.training.trainer import Trainer


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def finished_run(tiny_config, tmp_path):
    trainer = Trainer(tiny_config(stage_steps=3))
    trainer.train()
    return tmp_path / "run", trainer


@pytest.mark.parametrize("which", ["final", "run dir"])
def test_training_from_an_rmt_checkpoint_starts_from_its_weights(tiny_config, tmp_path, finished_run, which):
    run, first = finished_run
    spec = run / "final" if which == "final" else run
    again = Trainer(tiny_config(model=str(spec), output_dir=str(tmp_path / "more")))
    assert _same(_weights(again.model), _weights(first.model))  # every weight, memory included
    assert again.tokenizer.get_vocab() == first.tokenizer.get_vocab()
    again.train()
    assert not _same(_weights(again.model), _weights(first.model))  # and it trains on


def test_checkpoints_and_the_final_model_have_the_usual_modes(finished_run):
    import os
    import stat

    run, _ = finished_run
    modes = {p.relative_to(run): stat.S_IMODE(p.stat().st_mode) for p in run.rglob("*")}
    umask = os.umask(0)
    os.umask(umask)
    assert {m for p, m in modes.items() if (run / p).is_file()} == {0o666 & ~umask}, modes  # model.safetensors too
    assert {m for p, m in modes.items() if (run / p).is_dir()} == {0o777 & ~umask}, modes


def test_an_rmt_checkpoint_with_other_memory_settings_is_refused(tiny_config, tmp_path, finished_run):
    run, _ = finished_run
    with pytest.raises(ValueError, match=r"other memory settings \(this run has num_mem_tokens=4\); "
                                         r"continue it with: --num-mem-tokens 2"):
        Trainer(tiny_config(model=str(run / "final"), num_mem_tokens=4, output_dir=str(tmp_path / "x")))
    with pytest.raises(ValueError, match="is an RMT checkpoint .*--no-memory"):
        Trainer(tiny_config(model=str(run / "final"), memory=False, output_dir=str(tmp_path / "y")))
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()  # refused before writing


def _interrupted_run(tiny_config, tmp_path):
    full = Trainer(tiny_config(output_dir=str(tmp_path / "full")))
    full.train()
    part = Trainer(tiny_config(output_dir=str(tmp_path / "part")))
    part.train(stop_after=7)  # checkpoints at steps 3 and 6
    return full, [p.name for p in list_checkpoints(tmp_path / "part")]


def test_resume_falls_back_past_a_truncated_checkpoint(tiny_config, tmp_path, capsys):
    full, names = _interrupted_run(tiny_config, tmp_path)
    assert names == ["step-000003", "step-000006"]
    weights = tmp_path / "part" / "checkpoints" / "step-000006" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])  # a full disk, a cut copy
    capsys.readouterr()
    resumed = Trainer(tiny_config(output_dir=str(tmp_path / "part")), resume=True)
    err = capsys.readouterr().err
    assert f"{weights} is truncated" in err and "resuming from" in err and "step-000003" in err
    assert resumed.step == 3
    resumed.train()
    assert _same(_weights(resumed.model), _weights(full.model))  # as if never interrupted


@pytest.mark.parametrize("damage", ["state", "optimizer"])
def test_damaged_checkpoint_files_are_named(tiny_config, tmp_path, capsys, damage):
    _interrupted_run(tiny_config, tmp_path)
    root = tmp_path / "part" / "checkpoints"
    name = {"state": "trainer_state.json", "optimizer": "optimizer.pt"}[damage]
    for step in ("step-000006", "step-000003"):
        path = root / step / name
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
        if step == "step-000006":
            capsys.readouterr()
            assert Trainer(tiny_config(output_dir=str(tmp_path / "part")), resume=True).step == 3
            assert str(path) in capsys.readouterr().err
    with pytest.raises(ValueError) as info:
        Trainer(tiny_config(output_dir=str(tmp_path / "part")), resume=True)
    message = str(info.value)
    assert "no checkpoint" in message and "is whole" in message and "\n" not in message
    assert str(root / "step-000006" / name) in message and str(root / "step-000003" / name) in message


def test_a_metrics_line_cut_by_a_kill_does_not_stop_resume(tiny_config, tmp_path):
    full, _ = _interrupted_run(tiny_config, tmp_path)
    with open(tmp_path / "part" / "metrics.jsonl", "a") as f:
        f.write('{"type": "train", "st')
    resumed = Trainer(tiny_config(output_dir=str(tmp_path / "part")), resume=True)
    resumed.train()
    assert _untimed(tmp_path / "part" / "metrics.jsonl") == _untimed(tmp_path / "full" / "metrics.jsonl")


def _untimed(path):
    """A metrics file's records without their timing (seconds_per_step differs from run to run)."""
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for record in records:
        record.pop("seconds_per_step", None)
    return records


def test_resume_from_the_command_line_takes_the_runs_own_settings(tmp_path, capsys):
    """`rmt train --resume --output-dir RUN` continues RUN with the settings it was started with;
    flags given change only what they name. It used to compare the run against the defaults and
    refuse ("holds a run with another config")."""
    from tests.cli_util import run_cli

    run = tmp_path / "run"
    flags = ["--task", "qa1", "--n-facts", "1,2", "--segment-size", "16", "--num-mem-tokens", "2", "--n-layer", "1",
             "--n-embd", "32", "--n-head", "2", "--curriculum", "1", "--stage-steps", "2", "--batch-size", "4",
             "--eval-every", "2", "--eval-samples", "4", "--save-every", "1", "--log-every", "1", "--threads", "1",
             "--no-progress"]
    code, out, err = run_cli(capsys, "train", *flags, "--output-dir", run)
    assert code == 0, err
    code, out, err = run_cli(capsys, "train", "--resume", "--output-dir", run, "--no-progress")
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["step"] == 2
    saved = json.loads((run / "train_config.json").read_text())
    assert saved["segment_size"] == 16 and saved["n_embd"] == 32 and saved["stage_steps"] == 2
    # a flag that would make another run is still refused, naming it
    code, out, err = run_cli(capsys, "train", "--resume", "--output-dir", run, "--segment-size", "32")
    assert code == 2 and "segment_size=16 (now 32)" in err
