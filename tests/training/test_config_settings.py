"""TrainConfig is composed of the model's RMTConfig (every memory setting a flag, resume keys
derived), and every setting is checked by its meaning before anything is written: a wrong value
is one error line naming the key, a number written in YAML is a number."""

import json

import pytest

from rmt import RMTConfig
from rmt.training import config as training_config
from rmt.training.config import TrainConfig
from tests.cli_util import run_cli, snapshot


# --------------------------------------------------------------------- composed of RMTConfig
def test_the_memory_settings_are_the_models_rmt_config():
    cfg = TrainConfig.from_dict(dict(memory_kind="armt", num_mem_tokens=4, d_mem=32, dpfp_nu=2, armt_heads=2))
    assert cfg.rmt == RMTConfig(memory_kind="armt", num_mem_tokens=4, segment_size=32, d_mem=32, dpfp_nu=2, armt_heads=2)
    assert (cfg.rmt.d_mem, cfg.rmt.segment_size) == (32, 32)
    assert not hasattr(cfg, "segment_size")  # no flat attributes: the memory settings are the RMTConfig's
    assert TrainConfig.from_dict(dict(memory_kind="rmt-r", retrieval_heads=4)).rmt.retrieval_heads == 4
    # the checks are RMTConfig's (and the kind's), once
    with pytest.raises(ValueError, match="armt_heads=3 must divide d_mem=64"):
        TrainConfig.from_dict(dict(memory_kind="armt", armt_heads=3))
    given = RMTConfig(memory_kind="armt", segment_size=8, d_mem=16)
    assert TrainConfig(rmt=given).rmt == given


def test_resume_keys_are_derived_and_cover_every_memory_setting():
    keys = training_config.RESUME_KEYS
    for name in ("d_mem", "dpfp_nu", "armt_heads", "retrieval_heads", "memory_write", "segment_size", "lr", "seed"):
        assert name in keys
    for name in ("output_dir", "stage_steps", "threads", "progress", "eval_every"):
        assert name not in keys
    armt = TrainConfig.from_dict(dict(memory_kind="armt"))
    assert TrainConfig.from_dict(dict(memory_kind="armt", d_mem=32)).resume_mismatch(armt) == ["d_mem"]


def test_train_config_json_keeps_its_flat_layout_and_old_files_load(tmp_path):
    cfg = TrainConfig.from_dict(dict(memory_kind="armt", d_mem=32, segment_size=16))
    cfg.save(tmp_path / "train_config.json")
    saved = json.loads((tmp_path / "train_config.json").read_text())
    assert saved["d_mem"] == 32 and saved["segment_size"] == 16 and "rmt" not in saved and "self_retrieval" not in saved
    assert TrainConfig.from_file(tmp_path / "train_config.json") == cfg
    # a train_config.json of the version before (no d_mem & co.; v0.1 files also have self_retrieval)
    old = {"task": "qa1", "n_facts": None, "background": None, "model": None, "tokenizer": None, "vocab_size": 5000,
           "arch": "gpt2", "n_layer": 2, "n_embd": 128, "n_head": 4, "memory": True, "num_mem_tokens": 8,
           "segment_size": 32, "bptt_depth": -1, "memory_kind": "rmt", "self_retrieval": True, "memory_write": "replace",
           "write_gate_bias": 1.0, "write_sparsity": 0.05, "curriculum": [1, 2, 4], "stage_steps": 200,
           "stage_threshold": None, "vary_n_segments": True, "batch_size": 32, "lr": 0.001, "weight_decay": 0.01,
           "scheduler": "constant", "warmup_steps": 0, "grad_clip": 1.0, "seed": 0, "output_dir": "runs/train",
           "save_every": 100, "eval_every": 100, "eval_samples": 100, "eval_batch_size": 50, "log_every": 10,
           "tensorboard": False, "mixed_precision": "no", "gradient_checkpointing": False, "threads": None, "progress": True}
    (tmp_path / "old.json").write_text(json.dumps(old))
    loaded = TrainConfig.from_file(tmp_path / "old.json")
    assert loaded.rmt.memory_kind == "rmt-r" and loaded.rmt.d_mem == 64
    assert loaded.resume_mismatch(TrainConfig.from_dict(dict(memory_kind="rmt-r"))) == []


def test_every_memory_setting_is_a_flag_of_rmt_train(tmp_path, monkeypatch, capsys):
    from rmt.training import trainer

    seen = {}

    class Stop(Exception):
        pass

    def capture(cfg, resume=False):
        seen["cfg"] = cfg
        raise Stop

    monkeypatch.setattr(trainer, "Trainer", capture)
    from rmt.cli import main

    with pytest.raises(Stop):
        main(["train", "--memory-kind", "armt", "--d-mem", "32", "--dpfp-nu", "2", "--armt-heads", "4",
              "--output-dir", str(tmp_path / "a")])
    assert (seen["cfg"].rmt.d_mem, seen["cfg"].rmt.dpfp_nu, seen["cfg"].rmt.armt_heads) == (32, 2, 4)
    with pytest.raises(Stop):
        main(["train", "--memory-kind", "rmt-r", "--retrieval-heads", "2", "--output-dir", str(tmp_path / "b")])
    assert seen["cfg"].rmt.retrieval_heads == 2
    code, _, err = run_cli(capsys, "train", "--memory-kind", "armt", "--d-mem", "12", "--armt-heads", "5",
                           "--output-dir", tmp_path / "c")
    assert code == 2 and err.strip() == "error: armt_heads=5 must divide d_mem=12"


# --------------------------------------------------------------------- values by their meaning
@pytest.mark.parametrize("settings, message", [
    (dict(grad_clip=-1.0), "grad_clip must be a finite number >= 0 (0: no clipping), got -1.0"),
    (dict(weight_decay=-5.0), "weight_decay must be a finite number >= 0 (0: no decay), got -5.0"),
    (dict(lr=float("inf")), "lr must be a finite number > 0, got inf"),
    (dict(lr="3e-4"), "lr must be a finite number > 0, got '3e-4'"),  # the Python API takes numbers
    (dict(weight_decay="1e-2"), "weight_decay must be a finite number >= 0 (0: no decay), got '1e-2'"),
    (dict(seed=-1), "seed must be an integer >= 0, got -1"),
    (dict(seed=1.5), "seed must be an integer >= 0, got 1.5"),
    (dict(warmup_steps=-2), "warmup_steps must be an integer >= 0, got -2"),
    (dict(stage_threshold="high"), "stage_threshold must be in (0, 1] or None, got 'high'"),
    (dict(tensorboard="yes"), "tensorboard must be true or false, got 'yes'"),
    (dict(model=""), "model must be a non-empty string"),
    (dict(output_dir=3), "output_dir must be a non-empty string (a path), got 3"),
    (dict(rmt=dict(d_mem=0, memory_kind="armt")), "d_mem must be an integer >= 1, got 0"),
])
def test_every_setting_is_checked_by_its_meaning(settings, message):
    with pytest.raises(ValueError) as info:
        TrainConfig(**settings)
    assert message in str(info.value)


def test_yaml_numbers_are_numbers(tmp_path):
    # PyYAML reads 3e-4 and 1e-2 (no dot) as strings: they are read as the fields' declared types
    (tmp_path / "run.yaml").write_text("lr: 3e-4\nweight_decay: 1e-2\ngrad_clip: 1\nstage_steps: 1e3\n"
                                       "write_sparsity: 5e-2\nsegment_size: 16\n")
    cfg = TrainConfig.from_file(tmp_path / "run.yaml")
    assert (cfg.lr, cfg.weight_decay, cfg.grad_clip, cfg.stage_steps) == (3e-4, 1e-2, 1.0, 1000)
    assert isinstance(cfg.grad_clip, float) and cfg.rmt.write_sparsity == 0.05 and cfg.rmt.segment_size == 16


@pytest.mark.parametrize("line, message", [
    ("weight_decay: lots", "weight_decay must be a finite number >= 0 (0: no decay), got 'lots'"),
    ("batch_size: 2.5", "batch_size must be an integer >= 1, got 2.5"),
    ("memory_kind: 3", "unknown memory_kind 3; allowed: rmt, rmt-r, armt"),
    ("d_mem: big", "d_mem must be an integer >= 1, got 'big'"),
    ("curriculum: [1, two]", "curriculum must be a list of segment counts >= 1, got [1, 'two']"),
    ("grad_clip: -1", "grad_clip must be a finite number >= 0 (0: no clipping), got -1"),
])
def test_a_wrong_setting_in_a_config_file_names_its_key_and_writes_nothing(tmp_path, capsys, line, message):
    (tmp_path / "run.yaml").write_text(line + "\n")
    before = snapshot(tmp_path)
    code, _, err = run_cli(capsys, "train", "--config", tmp_path / "run.yaml", "--output-dir", tmp_path / "run")
    assert code == 2 and err.strip() == f"error: {message}"
    assert snapshot(tmp_path) == before  # no run dir, no train_config.json


def test_gradient_ascent_settings_are_refused_on_the_command_line(tmp_path, capsys):
    for flags, message in ((["--grad-clip", "-1"], "grad_clip must be a finite number >= 0 (0: no clipping), got -1.0"),
                           (["--weight-decay", "-5"], "weight_decay must be a finite number >= 0 (0: no decay), got -5.0")):
        code, _, err = run_cli(capsys, "train", *flags, "--output-dir", tmp_path / "run")
        assert code == 2 and err.strip() == f"error: {message}"
        assert not (tmp_path / "run").exists()
