import json
import os
import subprocess
import sys

from PIL import Image


def test_quickstart_tiny_run_ends_with_one_json_line(tmp_path):
    out = tmp_path / "qs"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "rmt", "quickstart", "--steps", "2", "--eval-samples", "4",
                           "--max-eval-segments", "8", "--threads", "1", "--no-progress", "--output-dir", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(result) == {"task", "seed", "train_segments", "segment_size", "baseline_window_segments", "rmt",
                           "baseline", "seconds"}
    assert result["train_segments"] == 4 and result["baseline_window_segments"] == 4 and result["seed"] == 0
    assert list(result["rmt"]) == list(result["baseline"]) == ["1", "2", "4", "8"]
    # Every length has a number for both models: the baseline reads the last window of 8 segments.
    assert all(0 <= result[m][k] <= 1 for m in ("rmt", "baseline") for k in result[m])
    assert "last window only" in proc.stdout and "fact detection" in proc.stdout
    png = out / "accuracy_vs_length.png"
    assert Image.open(png).size[0] > 100
    assert (out / "rmt" / "final" / "model.safetensors").exists() and (out / "rmt" / "final" / "tokenizer.json").exists()
    assert str(png) in proc.stdout and str(out / "rmt" / "final") in proc.stdout
