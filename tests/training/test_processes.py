"""Real processes: `rmt train` killed with SIGKILL then resumed, 2-process DDP (gloo) vs 1 process,
and the CLI's one-line errors."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rmt.training.trainer import Trainer

FLAGS = ["--task", "qa1", "--n-facts", "1,2", "--segment-size", "16", "--num-mem-tokens", "2", "--n-layer", "1",
         "--n-embd", "32", "--n-head", "2", "--batch-size", "4", "--lr", "0.003", "--eval-samples", "4",
         "--eval-batch-size", "4", "--log-every", "1", "--threads", "1", "--no-progress"]


def _cli_config(tiny_config, out, **overrides):
    """The TrainConfig that FLAGS + overrides describe (for an in-process reference run)."""
    return tiny_config(output_dir=str(out), **overrides)


def _run(args, **kwargs):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "rmt", *args], capture_output=True, text=True, env=env, timeout=300, **kwargs)


def _losses(out):
    return [json.loads(l)["loss"] for l in (Path(out) / "metrics.jsonl").read_text().splitlines() if '"train"' in l]


def test_kill_9_then_resume_matches_an_uninterrupted_run(tiny_config, tmp_path):
    steps = dict(curriculum=[1, 2], stage_steps=60, save_every=5, eval_every=1000)
    reference = Trainer(_cli_config(tiny_config, tmp_path / "ref", **steps))
    reference.train()

    out = tmp_path / "killed"
    args = ["train", *FLAGS, "--curriculum", "1,2", "--stage-steps", "60", "--save-every", "5", "--eval-every", "1000",
            "--output-dir", str(out)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "rmt", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        ckpts = list((out / "checkpoints").glob("step-*")) if (out / "checkpoints").exists() else []
        if len(ckpts) >= 1:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (out / "final").exists()

    resumed = _run(args + ["--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = load_file(str(tmp_path / "ref" / "final" / "model.safetensors"))
    b = load_file(str(out / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _losses(tmp_path / "ref") == _losses(out)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _weights(run_dir):
    return load_file(str(Path(run_dir) / "final" / "model.safetensors"))


def _distance(a, b):
    """Euclidean distance between two state dicts, over all tensors together (float64)."""
    return sum(float((a[k].double() - b[k].double()).pow(2).sum()) for k in a) ** 0.5


def test_two_cpu_processes_ddp_gloo_match_one_process(tiny_config, tmp_path):
    """Same global batch (4 rows: 2 per process). Each row has one answer token + EOS, so the mean
    of the per-process losses is the global mean and the averaged gradient is the 1-process gradient.

    The runs differ only in float summation order, which Adam amplifies differently on each CPU, so
    weights are not compared element by element. Instead, the distance between the two final models
    must be tiny against how far training moved them (measured: ~1e-5 of it). Broken data
    parallelism moves the 2-process model somewhere else: both ranks training on the same rows, or
    gradients not averaged (each rank follows its own half), lands at a large fraction of the update.
    """
    steps = dict(curriculum=[1, 2], stage_steps=4, save_every=100, eval_every=100)
    Trainer(_cli_config(tiny_config, tmp_path / "one", **steps)).train()
    Trainer(_cli_config(tiny_config, tmp_path / "init", curriculum=[1], stage_steps=1, save_every=100,
                        eval_every=100, lr=1e-30)).train()  # the common initial weights (one step of ~0)
    out = tmp_path / "two"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           "-m", "rmt", "train", *FLAGS, "--curriculum", "1,2", "--stage-steps", "4", "--save-every", "100",
           "--eval-every", "100", "--output-dir", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count('"finished": true') == 1  # both ranks train, one reports (both printed it before)
    records = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert {r["processes"] for r in records if r["type"] == "train"} == {2}
    one, two = _losses(tmp_path / "one"), _losses(out)
    assert len(one) == len(two) == 8
    assert one[0] == pytest.approx(two[0], rel=1e-5)  # same init, same global batch
    assert two == pytest.approx(one, rel=1e-3)
    a, b, init = _weights(tmp_path / "one"), _weights(out), _weights(tmp_path / "init")
    assert a.keys() == b.keys()
    moved = _distance(a, init)
    assert moved > 0.1, "training did not move the weights; the comparison below would be empty"
    assert _distance(a, b) < 1e-3 * moved, (_distance(a, b), moved)


def test_accelerate_launch_that_would_run_one_process_says_so(tmp_path):
    """`accelerate launch --num_processes 2` without --multi_gpu on a machine without GPUs runs its
    single-process launcher; `rmt train` used to train silently in one process."""
    pytest.importorskip("accelerate")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "-m", "rmt",
                           "train", *FLAGS, "--output-dir", str(tmp_path / "o")], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode != 0 and not (tmp_path / "o").exists()
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
    assert errors == [errors[0]] and "--num_processes 2 started 1 process" in errors[0] and "--multi_gpu" in errors[0]


@pytest.mark.parametrize("extra, message", [
    (["--task", "qa42"], "unknown task 'qa42'"),
    (["--curriculum", "1,4,2"], "curriculum goes down (4 -> 2)"),
    (["--curriculum", "1,x"], "--curriculum must be comma-separated integers"),
])
def test_cli_bad_input_is_one_line(tmp_path, extra, message):
    proc = _run(["train", *FLAGS, "--output-dir", str(tmp_path / "o"), *extra])
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr


def test_cli_unwritable_output_dir_and_foreign_resume(tmp_path, tiny_config):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = _run(["train", *FLAGS, "--output-dir", str(blocker / "sub")])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "is not writable" in proc.stderr

    Trainer(_cli_config(tiny_config, tmp_path / "run", curriculum=[1], stage_steps=3, save_every=3)).train()
    before = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    proc = _run(["train", *FLAGS, "--curriculum", "1", "--stage-steps", "3", "--save-every", "3", "--n-embd", "64",
                 "--output-dir", str(tmp_path / "run"), "--resume"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "another config: n_embd=32 (now 64)" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == before
