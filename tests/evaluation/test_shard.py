"""`rmt eval` under torchrun / accelerate launch: the processes share the cells, rank 0 writes one
store, and that store equals the one a single process writes."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from rmt.evaluation.evaluate import evaluate
from rmt.evaluation.store import ResultsStore
from tests.cli_util import run_cli

from .conftest import OracleRunner

TESTS = os.path.dirname(os.path.abspath(__file__))
# CPU processes with gloo, as on a machine without GPUs, wherever the tests run
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
       "CUDA_VISIBLE_DEVICES": ""}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(store) -> list[tuple]:
    """Everything a result says about the answer (not when it was made or how long it took)."""
    with ResultsStore(store) as s:
        return sorted((r.model, r.task, r.length, r.sample_id, r.prompt_hash, r.status, r.output, r.target, r.correct,
                       r.correct_strict, r.n_tokens, r.prompt_set, r.producer) for r in s.results())


RANK_SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {tests!r})
    from conftest import OracleRunner
    from rmt.babilong import generate
    from rmt.evaluation.evaluate import evaluate
    from rmt.evaluation.shard import launched_shard
    records = generate(task="qa1", length="0k", samples=5, seed=0) + generate(task="qa2", length="0k", samples=2, seed=0)
    shard = launched_shard()
    runner = OracleRunner()
    summary = evaluate(runner, records, {store!r}, progress=False, shard=shard)
    print(json.dumps({{"rank": shard.rank, "world": shard.world_size, "asked": runner.calls, "done": summary.done,
                       "skipped": summary.skipped, "correct": summary.correct}}))
""")


def run_ranks(store, world=2) -> list[dict]:
    """``world`` processes with the environment torchrun gives them (gloo on CPU)."""
    port = free_port()
    procs = []
    for rank in range(world):
        env = {**ENV, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
               "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        procs.append(subprocess.Popen([sys.executable, "-c", RANK_SCRIPT.format(tests=TESTS, store=str(store))],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-3000:]
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def test_two_processes_share_the_cells_and_write_what_one_process_writes(tmp_path):
    from rmt.babilong import generate

    records = generate(task="qa1", length="0k", samples=5, seed=0) + generate(task="qa2", length="0k", samples=2, seed=0)
    single = tmp_path / "single.sqlite"
    evaluate(OracleRunner(), records, single, progress=False)

    sharded = tmp_path / "sharded.sqlite"
    ranks = run_ranks(sharded)
    assert sorted(r["asked"] for r in ranks) == [3, 4]  # each process answered its share, 7 in all
    for r in ranks:  # every process reports the whole run
        assert (r["world"], r["done"], r["skipped"], r["correct"]) == (2, 7, 0, 7)
    assert answers(sharded) == answers(single)

    again = OracleRunner()
    summary = evaluate(again, records, sharded, progress=False)  # one process sees the sharded store complete
    assert (summary.done, summary.skipped, again.calls) == (0, 7, 0)
    assert [r["asked"] for r in run_ranks(sharded)] == [0, 0]  # and so does a sharded rerun


def test_torchrun_eval_equals_one_process(tiny_hf_dir, tmp_path):
    args = [tiny_hf_dir, "--tasks", "qa1,qa2", "--lengths", "0k,1k", "--samples", "2", "--max-new-tokens", "3",
            "--no-progress"]
    single = subprocess.run([sys.executable, "-m", "rmt", "eval", *map(str, args), "--store", tmp_path / "one.sqlite"],
                            capture_output=True, text=True, env=ENV, timeout=300)
    assert single.returncode == 0, single.stderr
    launched = subprocess.run(["torchrun", "--standalone", "--nproc_per_node", "2", "-m", "rmt", "eval",
                               *map(str, args), "--store", str(tmp_path / "two.sqlite")],
                              capture_output=True, text=True, env=ENV, timeout=300)
    assert launched.returncode == 0, launched.stderr[-3000:]
    summaries = [line for line in launched.stdout.splitlines() if " answered, " in line]
    assert len(summaries) == 1 and "8 answered, 0 already done" in summaries[0] and "(2 processes)" in summaries[0]
    assert launched.stdout.count("results: ") == 1  # rank 0 reports; the others stay quiet
    assert answers(tmp_path / "two.sqlite") == answers(tmp_path / "one.sqlite")
    rerun = subprocess.run([sys.executable, "-m", "rmt", "eval", *map(str, args), "--store", tmp_path / "two.sqlite"],
                           capture_output=True, text=True, env=ENV, timeout=300)
    assert rerun.returncode == 0 and "0 answered, 8 already done" in rerun.stdout, rerun.stderr


def test_accelerate_asked_for_processes_it_did_not_start_is_one_line(tmp_path):
    """Without --multi_gpu on a machine without GPUs, accelerate starts one process for any
    --num_processes: evaluation says so instead of running alone unnoticed."""
    pytest.importorskip("accelerate")
    result = subprocess.run(["accelerate", "launch", "--num_processes", "2", "-m", "rmt", "eval", "x", "--store",
                             str(tmp_path / "r.sqlite")], capture_output=True, text=True, env=ENV, timeout=300)
    if "--multi_gpu" not in result.stderr and result.returncode == 0:
        pytest.skip("this accelerate started the processes it was asked for")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    # accelerate's launcher adds its own traceback (CalledProcessError: ... exit status 2); none is rmt's
    assert "returned non-zero exit status 2" in result.stderr and len(errors) == 1, result.stderr
    assert "/rmt/" not in result.stderr.replace("-m', 'rmt'", ""), result.stderr
    assert "started 1 process" in errors[0] and "torchrun --nproc_per_node 2 -m rmt eval" in errors[0]
    assert list(tmp_path.iterdir()) == []


def test_a_world_size_that_is_not_a_count_is_one_line(capsys, monkeypatch, tmp_path, tiny_hf_dir):
    monkeypatch.setenv("WORLD_SIZE", "two")
    code, out, err = run_cli(capsys, "eval", tiny_hf_dir, "--store", tmp_path / "r.sqlite")
    assert code == 2 and err.strip() == ("error: environment variable WORLD_SIZE='two' is not a process count; it is "
                                         "set by torchrun or accelerate launch (unset it to run one process)")


def test_more_processes_than_gpus_is_one_line(monkeypatch):
    import torch

    from rmt.evaluation.shard import launched_shard

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for name, value in (("WORLD_SIZE", "2"), ("LOCAL_WORLD_SIZE", "2"), ("RANK", "0"), ("LOCAL_RANK", "0")):
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=r"started 2 processes on this machine, which has 1 CUDA device\(s\).*"
                                         r"--device cpu"):
        launched_shard()
