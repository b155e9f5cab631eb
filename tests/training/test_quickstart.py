import json
import os
import subprocess
import sys

import pytest
from PIL import Image

KEYS = {"task", "base", "seed", "train_segments", "segment_size", "baseline_window_segments", "rmt", "baseline",
        "seconds"}


def test_quickstart_tiny_run_ends_with_one_json_line(tmp_path):
    out = tmp_path / "qs"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "rmt", "quickstart", "--steps", "2", "--eval-samples", "4",
                           "--max-eval-segments", "8", "--threads", "1", "--no-progress", "--output-dir", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(result) == KEYS
    assert result["base"] is None and result["train_segments"] == 4 and result["baseline_window_segments"] == 4 and result["seed"] == 0
    assert list(result["rmt"]) == list(result["baseline"]) == ["1", "2", "4", "8"]
    # Every length has a number for both models: the baseline reads the last window of 8 segments.
    assert all(0 <= result[m][k] <= 1 for m in ("rmt", "baseline") for k in result[m])
    assert "last window only" in proc.stdout and "fact detection" in proc.stdout
    png = out / "accuracy_vs_length.png"
    assert Image.open(png).size[0] > 100
    assert (out / "rmt" / "final" / "model.safetensors").exists() and (out / "rmt" / "final" / "tokenizer.json").exists()
    assert str(png) in proc.stdout and str(out / "rmt" / "final") in proc.stdout


@pytest.mark.slow
def test_quickstart_on_a_pretrained_base(tmp_path, smollm2):
    """`rmt quickstart --base smollm2-135m`: the pretrained model fine-tuned with memory on multi-fact
    qa1; the same JSON keys, the baseline reads up to the model's own window (8192 tokens)."""
    out = tmp_path / "qs"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "rmt", "quickstart", "--base", "smollm2-135m", "--steps", "1",
                           "--eval-samples", "2", "--max-eval-segments", "4", "--no-progress", "--output-dir", str(out)],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(result) == KEYS and result["base"] == "smollm2-135m" and result["task"] == "qa1"
    assert result["train_segments"] == 2 and result["segment_size"] == 64
    assert result["baseline_window_segments"] == 8192 // 64
    assert list(result["rmt"]) == list(result["baseline"]) == ["1", "2", "4"]
    assert all(0 <= result[m][k] <= 1 for m in ("rmt", "baseline") for k in result[m])
    config = json.loads((out / "rmt" / "train_config.json").read_text())
    assert config["model"] == "smollm2-135m" and config["task"] == "qa1"
    assert Image.open(out / "accuracy_vs_length.png").size[0] > 100
