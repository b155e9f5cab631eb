"""`rmt reproduce`: a smoke run writes its tables and heatmap; a killed run resumes to the same
results; bad input is one line. (Accuracy and timing are never asserted: --quick trains for seconds.)"""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from tests.cli_util import one_error_line, run_cli, snapshot

QUICK = ["--quick", "--recipes", "detect", "--seeds", "0", "--no-progress"]
ROWS = ["RMT", "RMT-R", "ARMT", "no memory", "RAG"]


def _rmt(*args, **kwargs):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "rmt", "reproduce", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kwargs)


def _finish(proc, timeout=600):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1]), out


def _results(out: Path) -> list:
    """Every stored answer, without the columns that are times."""
    rows = []
    for store in sorted((out / "results").glob("*.sqlite")):
        db = sqlite3.connect(store)
        rows += db.execute("SELECT model, task, length, sample_id, prompt_hash, status, output, target, correct, "
                           "correct_strict, n_tokens, prompt_set FROM results ORDER BY model, task, length, sample_id").fetchall()
        db.close()
    return rows


def _weights(out: Path) -> dict:
    """Every trained model's tensors, as lists (the file's metadata order may differ between processes)."""
    from safetensors.torch import load_file

    return {str(p.relative_to(out)): {k: v.tolist() for k, v in load_file(p).items()}
            for p in sorted(out.glob("runs/*/*/*/final/model.safetensors"))}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce") / "out"
    result, stdout = _finish(_rmt(*QUICK, "--jobs", "1", "--output-dir", out))
    return out, result, stdout


def test_smoke_run_writes_summary_report_and_heatmap(smoke):
    from rmt.evaluation.report import heatmap_pixels, load_table

    out, result, stdout = smoke
    assert result["recipes"] == ["detect"] and result["seeds"] == [0] and result["jobs"] == 5
    assert result["done_before"] == 0
    # The summary: one line per row, the lengths as columns, mean (min) over the seeds.
    summary = (out / "summary.md").read_text()
    for row in ROWS:
        assert f"| detect | {row} |" in summary
    assert "| 1 | 2 | 4 |" in summary
    assert set(result["table"]["detect"]) == set(ROWS)
    assert set(result["table"]["detect"]["RAG"]) == {"1", "2"}  # --quick evaluates RAG at 1 and 2 segments
    for row, cells in result["table"]["detect"].items():
        for cell in cells.values():
            assert set(cell["seeds"]) == {"0"} and cell["mean"] == cell["min"] == cell["seeds"]["0"]
    # What `rmt report` draws from the stores: rows = models, task = recipe, length = tokens.
    table = load_table([out / "results" / "seed0.sqlite"])
    assert sorted(table.models) == sorted(ROWS) and table.tasks == ["detect"] and table.lengths == ["16", "32", "64"]
    assert Image.open(out / "heatmap.png").size == heatmap_pixels(table)
    assert "## RAG" in (out / "report.md").read_text()
    # Every answer stored: 3 samples per length, RMT-R to 2 segments only (its `longest`), RAG 2 at two lengths.
    assert set(result["table"]["detect"]["RMT-R"]) == {"1", "2"}
    assert len(_results(out)) == 3 * 3 * 3 + 2 * 3 + 2 * 2
    # Per job: its record; the memory rows of seed 0 have their diagnostic.
    for row in ROWS:
        job = json.loads((out / "runs" / "detect" / row.lower().replace(" ", "-") / "seed0" / "job.json").read_text())
        assert job["spec"]["row"] == row and set(job["accuracy"]) == set(result["table"]["detect"][row])
        assert ("diagnose" in job) == (row in ("RMT", "RMT-R", "ARMT"))
    assert (out / "runs" / "detect" / "armt" / "seed0" / "diagnose" / "diagnose.png").is_file()
    # Wall time per job and in total, and how to redraw the report.
    assert "detect / RMT / seed 0: train" in stdout and "wall time" in stdout and "rmt report" in stdout


def test_rerun_skips_finished_jobs(smoke, capsys):
    out, result, _ = smoke
    before = _results(out)
    weights = _weights(out)
    jobs = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*/*/job.json")}
    code, stdout, err = run_cli(capsys, "reproduce", *QUICK, "--jobs", "1", "--output-dir", out)
    assert code == 0, err
    again = json.loads(stdout.strip().splitlines()[-1])
    assert again["done_before"] == 5 and again["table"] == result["table"]
    assert "0 to run" in stdout and _results(out) == before and _weights(out) == weights
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*/*/job.json")} == jobs
    # Without the diagnostic the jobs are done too (they did more).
    code, stdout, err = run_cli(capsys, "reproduce", *QUICK, "--no-diagnose", "--output-dir", out)
    assert code == 0 and json.loads(stdout.strip().splitlines()[-1])["done_before"] == 5


def test_a_changed_recipe_does_not_reuse_the_old_training(smoke, tmp_path, capsys, monkeypatch):
    """Rerunning into the same dir after a recipe changed (here: steps per stage) is an error naming
    the setting, before any work, not a table mixing the old models with the new settings."""
    import shutil

    from rmt.training import recipes

    out = tmp_path / "copy"
    shutil.copytree(smoke[0], out)
    before = snapshot(out)
    monkeypatch.setattr(recipes, "QUICK_TRAIN", {**recipes.QUICK_TRAIN, "stage_steps": 4})
    code, _, err = run_cli(capsys, "reproduce", *QUICK, "--output-dir", out)
    line = one_error_line(code, err)
    assert "stage_steps=3 (now 4)" in line and "runs/detect/rmt/seed0" in line
    assert snapshot(out) == before


def test_killed_run_resumes_to_identical_results(smoke, tmp_path):
    """kill -9 in the middle of the run (a training in progress), then the same command again (in
    two processes): the finished jobs are skipped and the results equal the uninterrupted run's."""
    reference, result, _ = smoke
    out = tmp_path / "out"
    proc = _rmt(*QUICK, "--jobs", "1", "--output-dir", out, start_new_session=True)
    # Kill once the second job (RMT-R) has written its first checkpoint: its training is unfinished.
    deadline = time.time() + 300
    while not (out / "runs" / "detect" / "rmt-r" / "seed0" / "checkpoints").is_dir():
        assert proc.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = [p for p in out.glob("runs/detect/*/seed0/job.json")]
    assert 1 <= len(done) < 5
    resumed, _ = _finish(_rmt(*QUICK, "--jobs", "2", "--output-dir", out))
    assert resumed["done_before"] == len(done)
    assert resumed["table"] == result["table"]
    assert _results(out) == _results(reference)
    assert _weights(out) == _weights(reference) and len(_weights(out)) == 4
    assert (out / "summary.md").read_text() == (reference / "summary.md").read_text().replace(str(reference), str(out))


def test_bad_input_is_one_line(tmp_path, capsys, monkeypatch):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    before = snapshot(tmp_path)
    cases = [
        (["--recipes", "detect,nope"], "unknown recipe 'nope'"),
        (["--recipes", ","], "--recipes"),
        (["--seeds", "a,b"], "--seeds"),
        (["--seeds", "0,0"], "twice"),
        (["--seeds", "-1"], "--seeds"),
        (["--threads", "0"], "--threads"),
        (["--jobs", "0"], "--jobs"),
        (["--output-dir", a_file], "is a file"),
        (["--output-dir", foreign], "not written by rmt reproduce"),
        (["--recipes", "detect", "--rows", "rmt,bogus"], "unknown row 'bogus' in --rows; the chosen recipes have: rmt,"),
        (["--recipes", "detect", "--rows", "llm"], "unknown row 'llm'"),  # from-scratch recipes have no base to ask
        (["--recipes", "detect", "--rows", "rag"], "reads with the no-memory row's model: add no-memory"),
    ]
    for args, expected in cases:
        code, out, err = run_cli(capsys, "reproduce", "--quick", "--no-progress", *(["--output-dir", tmp_path / "new"]
                                 if "--output-dir" not in args else []), *args)
        assert expected in one_error_line(code, err)
    assert snapshot(tmp_path) == before  # nothing written, nothing created
    # A dir of a --quick run is not resumed without --quick (its models are the tiny ones).
    marked = tmp_path / "marked"
    marked.mkdir()
    (marked / "reproduce.json").write_text(json.dumps({"quick": True}))
    code, out, err = run_cli(capsys, "reproduce", "--output-dir", marked, "--no-progress")
    assert "--quick" in one_error_line(code, err)
    # RAG's packages missing: said before any training, nothing written.
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "faiss" else real(name, *a))
    code, out, err = run_cli(capsys, "reproduce", "--quick", "--no-progress", "--output-dir", tmp_path / "no-rag")
    assert "faiss" in one_error_line(code, err) and not (tmp_path / "no-rag").exists()


def test_recipes_are_checked_data():
    from rmt.training.recipes import NO_MEMORY, RAG, RECIPES, Recipe
    from rmt.training.reproduce import plan

    for recipe in RECIPES.values():
        kinds = {"RMT", "ARMT", NO_MEMORY} if recipe.llm else {"RMT", "RMT-R", "ARMT", NO_MEMORY}
        assert recipe.rows.keys() >= kinds and recipe.rag
        for row in recipe.rows:
            assert recipe.train_config(row, 0, "x").task == recipe.train["task"]
        assert max(recipe.train["curriculum"]) <= 8
        # a pretrained recipe trains on at most 512 tokens and is evaluated to at least 16x that
        if recipe.llm:
            assert max(recipe.train["curriculum"]) * recipe.train["segment_size"] <= 512
            assert max(recipe.eval_segments) >= 16 * max(recipe.train["curriculum"])
    assert max(RECIPES["detect"].eval_segments) >= 1024 and max(RECIPES["qa1"].eval_segments) >= 64
    assert RECIPES["detect"].train_config("RMT", 0, "x").rmt.memory_write == "gated"
    assert RECIPES["detect"].train_config("RMT-R", 0, "x").rmt.memory_kind == "rmt-r"
    with pytest.raises(ValueError, match="missing \\[4\\]"):
        Recipe("r", {"task": "detect"}, {NO_MEMORY: {"memory": False}}, (1, 4), {1: 10})
    with pytest.raises(ValueError, match="needs the row"):
        Recipe("r", {"task": "detect"}, {"RMT": {}}, (1,), 10)
    with pytest.raises(ValueError, match="longest must map rows"):
        Recipe("r", {"task": "detect"}, {"RMT": {}}, (1,), 10, rag=False, longest={"RMT-X": 4})
    assert Recipe("r", {"task": "detect"}, {"RMT": {}}, (1, 4, 16), 10, rag=False, longest={"RMT": 4}).lengths_of("RMT") == (1, 4)
    with pytest.raises(ValueError, match="recipe r, row RMT: unknown task"):
        Recipe("r", {"task": "nope"}, {"RMT": {}}, (1,), 10, rag=False).train_config("RMT", 0, "x")
    jobs = plan([RECIPES["detect"], RECIPES["qa1"]], [1, 0], Path("out"))
    assert [(j.recipe.name, j.row, j.seed) for j in jobs[:5]] == [("detect", r, 1) for r in ROWS]
    rag = jobs[4]
    assert rag.row == RAG and rag.needs == [jobs[3]] and rag.model_dir == jobs[3].dir
    # The diagnostic runs on seed 0 of the memory rows only.
    assert {(j.recipe.name, j.row) for j in jobs if j.runs_diagnose} == {(r, row) for r in ("detect", "qa1")
                                                                           for row in ("RMT", "RMT-R", "ARMT")}
    assert all(j.seed == 0 for j in jobs if j.runs_diagnose)


def test_summary_is_mean_and_min_over_seeds(tmp_path):
    from rmt.training.recipes import RECIPES, quick
    from rmt.training.reproduce import plan, summary_markdown, summary_table

    recipe = quick(RECIPES["detect"])
    jobs = [j for j in plan([recipe], [0, 1, 2], tmp_path) if j.row == "RMT"]
    for job, accuracy in zip(jobs, ({"1": 1.0, "4": 0.5}, {"1": 0.8, "4": 0.25}, {"1": 0.9})):
        job.dir.mkdir(parents=True)
        (job.dir / "job.json").write_text(json.dumps({"spec": job.spec(), "accuracy": accuracy, "seconds": 1}))
    table = summary_table(jobs, [0, 1, 2])["detect"]["RMT"]
    assert table["1"] == {"seeds": {"0": 1.0, "1": 0.8, "2": 0.9}, "mean": 0.9, "min": 0.8}
    assert table["4"] == {"seeds": {"0": 0.5, "1": 0.25}, "mean": 0.375, "min": 0.25}
    text = summary_markdown(summary_table(jobs, [0, 1, 2]), [recipe], [0, 1, 2])
    assert "| detect | RMT | <= 2 x 16 | 0.90 (0.80) | - | 0.38 (0.25) [2 seeds] |" in text
    # A job.json of other settings is not a finished job (the recipe changed).
    other = dict(json.loads((jobs[0].dir / "job.json").read_text()))
    other["spec"] = {**other["spec"], "seed": 7}
    (jobs[0].dir / "job.json").write_text(json.dumps(other))
    assert jobs[0].done() is None


def test_rows_select_jobs_and_the_llm_row_is_the_untrained_base(tmp_path):
    """--rows picks rows by their CLI names; the pretrained recipes' LLM row trains nothing, evaluates
    the recipe's base model with the benchmark prompts (its own spec, so a finished table is not
    reused for another base), and reads the same stories as the trained rows."""
    from rmt.training.recipes import DEFAULT_RECIPES, LLM, NO_MEMORY, RAG
    from rmt.training.reproduce import parse_recipes, parse_rows, plan

    assert all(not name.startswith("smol-") for name in DEFAULT_RECIPES)  # no download without asking
    assert [r.name for r in parse_recipes(None)] == list(DEFAULT_RECIPES)
    recipes = parse_recipes("smol-qa1,smol-qa2", quick_settings=True)
    assert parse_rows(None, recipes) is None
    rows = parse_rows("RMT, llm", recipes)
    assert rows == {"RMT", LLM}
    jobs = plan(recipes, [0, 1], tmp_path, rows=rows)
    assert [(j.recipe.name, j.row, j.seed) for j in jobs] == [
        ("smol-qa1", "RMT", 0), ("smol-qa1", LLM, 0), ("smol-qa2", "RMT", 0), ("smol-qa2", LLM, 0),
        ("smol-qa1", "RMT", 1), ("smol-qa1", LLM, 1), ("smol-qa2", "RMT", 1), ("smol-qa2", LLM, 1)]
    llm, rmt = jobs[1], jobs[0]
    assert not llm.trains and rmt.trains and not llm.runs_diagnose and rmt.runs_diagnose
    assert llm.base_model == "smollm2-135m" and llm.train_row == NO_MEMORY
    spec = llm.spec()
    assert spec["llm"] == {"model": "smollm2-135m", "prompts": "benchmark, chat template"} and spec["max_new_tokens"] == 20
    # same data settings as the trained rows: the stories of a seed are the same for every row
    data_keys = ("task", "segment_size", "seed", "n_facts", "background", "model")
    assert {k: spec["train"][k] for k in data_keys} == {k: rmt.spec()["train"][k] for k in data_keys}
    with_rag = plan(recipes[:1], [0], tmp_path, rows=parse_rows("no-memory,rag", recipes))
    assert [j.row for j in with_rag] == [NO_MEMORY, RAG] and with_rag[1].needs == [with_rag[0]]


def test_a_job_done_before_the_memory_kinds_options_were_settings_is_still_done(tmp_path):
    from rmt.training.recipes import RECIPES, quick
    from rmt.training.reproduce import plan

    job = [j for j in plan([quick(RECIPES["detect"])], [0], tmp_path) if j.row == "ARMT"][0]
    spec = job.spec()
    for key in ("d_mem", "dpfp_nu", "armt_heads", "retrieval_heads"):  # what the record of the version before lacks
        del spec["train"][key]
    job.dir.mkdir(parents=True)
    (job.dir / "job.json").write_text(json.dumps({"spec": spec, "accuracy": {"1": 1.0}, "seconds": 1}))
    assert job.done() is not None
