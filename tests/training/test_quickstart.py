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
    assert set(result) == {"train_segments", "segment_size", "rmt", "baseline", "seconds"}
    assert result["train_segments"] == 4
    assert list(result["rmt"]) == ["1", "2", "4", "8"]
    assert all(0 <= result["rmt"][k] <= 1 for k in result["rmt"])
    # The baseline's window is the longest training input: 8 segments do not fit.
    assert result["baseline"]["8"] is None and all(0 <= result["baseline"][k] <= 1 for k in ("1", "2", "4"))
    assert "over window" in proc.stdout
    png = out / "accuracy_vs_length.png"
    assert Image.open(png).size[0] > 100
    assert (out / "rmt" / "final" / "model.safetensors").exists() and (out / "rmt" / "final" / "tokenizer.json").exists()
    assert str(png) in proc.stdout and str(out / "rmt" / "final") in proc.stdout
