"""lm-evaluation-harness both ways: its babilong prompts read from the installed package at run time
(`--prompts lm-eval`), and task files that make `lm_eval` evaluate on our data (`--lm-eval-tasks`)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

from rmt.babilong import generate  # noqa: E402
from rmt.babilong.io import save_records  # noqa: E402
from rmt.babilong.lm_eval import lm_eval_babilong_dir, lm_eval_prompt_parts, write_lm_eval_tasks  # noqa: E402
from rmt.babilong.prompts import format_prompt  # noqa: E402
from rmt.babilong.tasks import TASKS  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def lm_eval_config(task):
    """The task config as lm-eval itself reads it (its YAML loader, includes resolved)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    return load_yaml(lm_eval_babilong_dir() / f"babilong_{task}.yaml", resolve_func=False)


@pytest.mark.parametrize("task", ["qa1", "qa8", "qa19"])
def test_prompts_come_from_the_installed_lm_eval(task):
    config = lm_eval_config(task)
    parts = lm_eval_prompt_parts(task)
    assert parts["instruction"] == config["description"].strip()
    samples = config["fewshot_config"]["samples"][:config["num_fewshot"]]
    assert parts["examples"].count("<example>") == len(samples) == 2
    for sample in samples:
        assert f"{sample['input']}\n{sample['question']}\nAnswer: {sample['target']}" in parts["examples"]
    record = {"task": task, "input": "Some long text.", "question": "Where is Mary?"}
    prompt = format_prompt(record, prompts="lm-eval")
    assert prompt.startswith(config["description"].strip()) and "<context>\nSome long text.\n</context>" in prompt


@pytest.mark.parametrize("task", ["qa1", "qa2"])
def test_lm_eval_harness_prompt_is_the_text_lm_eval_sends(tmp_path, task):
    """`--prompts lm-eval-harness` gives, byte for byte, the context lm-eval's own task builds for the
    same document (its fewshot_context), so answers can be compared sample by sample."""
    from lm_eval.tasks import TaskManager

    records = _layout(tmp_path)
    write_lm_eval_tasks(tmp_path / "data", tmp_path / "tasks")
    name = f"rmt_babilong_{task}_0k"
    loaded = TaskManager(include_path=str(tmp_path / "tasks")).load_task_or_group([name])[name]
    docs = list(loaded.test_docs())
    cell = [r for r in records if (r["task"], r["length"]) == (task, "0k")]
    for doc, record in zip(docs, cell):
        theirs = loaded.fewshot_context(doc, num_fewshot=loaded.config.num_fewshot)
        assert format_prompt(record, prompts="lm-eval-harness") == theirs
    assert "<context>" in format_prompt(cell[0], prompts="lm-eval")  # the other set keeps rmt's layout


def test_every_task_has_lm_eval_prompts_and_none_are_copied_into_the_repo():
    for task in TASKS:
        assert lm_eval_prompt_parts(task)["instruction"]
    # read from the dependency, never copied: no lm-eval description text in our sources or docs
    phrase = lm_eval_config("qa1")["description"][:60]  # taken from the dependency, so this file holds none of it
    hits = [p for p in REPO.rglob("*") if p.is_file() and p.suffix in (".py", ".md", ".yaml", ".json")
            and ".git" not in p.parts and phrase in p.read_text(errors="ignore")]
    assert hits == []


def test_eval_with_lm_eval_prompts_records_the_prompt_set(tmp_path):
    from rmt.evaluation.evaluate import evaluate
    from rmt.evaluation.report import build_table, format_markdown, format_terminal
    from rmt.evaluation.store import ResultsStore

    from .conftest import OracleRunner

    class Runner(OracleRunner):
        def __init__(self, prompt_fn):
            super().__init__()
            self.prompt_fn, self.prompt_set = prompt_fn, prompt_fn.prompt_set

        def prompt(self, record):
            return self.prompt_fn(record, False)

        prompt_key = prompt

    from rmt.evaluation.prompting import prompt_fn

    records = generate(task="qa1", length="0k", samples=2, seed=0)
    with ResultsStore(tmp_path / "r.sqlite") as store:
        evaluate(Runner(prompt_fn("benchmark", prompts="lm-eval")), records, store, progress=False)
        evaluate(Runner(prompt_fn("benchmark", examples=False)), records, store, progress=False,
                 model_name="ours")
        results = list(store.results())
    assert {r.model: r.prompt_set for r in results} == {"oracle": "lm-eval", "ours": "builtin (no examples)"}
    table = build_table(results)
    assert "prompts: lm-eval" in format_terminal(table) and "Prompts: builtin (no examples)." in format_markdown(table)


def test_unknown_prompts_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rmt", "eval", "nothing", "--prompts", "lm-evl", "--store",
                           str(tmp_path / "r.sqlite")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: prompt file not found: lm-evl")
    assert "builtin, lm-eval" in proc.stderr and "Traceback" not in proc.stderr


def _layout(tmp_path):
    records = [r for length in ("0k", "1k") for task in ("qa1", "qa2")
               for r in generate(task=task, length=length, samples=3, seed=1)]
    save_records(records, tmp_path / "data")
    return records


def test_exported_tasks_load_in_lm_eval_with_its_prompts_and_scoring(tmp_path):
    from lm_eval.tasks import TaskManager

    records = _layout(tmp_path)
    names = write_lm_eval_tasks(tmp_path / "data", tmp_path / "tasks")
    assert names[:3] == ["rmt_babilong", "rmt_babilong_0k", "rmt_babilong_1k"]
    assert set(names[3:]) == {f"rmt_babilong_{t}_{l}" for t in ("qa1", "qa2") for l in ("0k", "1k")}
    loaded = TaskManager(include_path=str(tmp_path / "tasks")).load_task_or_group(["rmt_babilong_qa2_1k"])
    task = loaded["rmt_babilong_qa2_1k"]
    docs = list(task.test_docs())
    want = [r for r in records if (r["task"], r["length"]) == ("qa2", "1k")]
    assert [(d["input"], d["question"], d["target"]) for d in docs] == [(r["input"], r["question"], r["target"]) for r in want]
    assert task.config.description == lm_eval_config("qa2")["description"]  # lm-eval's prompt
    assert task.config.process_results.__module__.endswith("babilong.common_utils")  # lm-eval's scoring


def test_generate_cli_writes_lm_eval_tasks(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rmt", "generate", "--tasks", "qa1", "--lengths", "0k", "--samples", "2", "--out",
                           str(tmp_path / "d"), "--lm-eval-tasks", str(tmp_path / "t")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == [
        "rmt_babilong.yaml", "rmt_babilong_0k.yaml", "rmt_babilong_qa1_0k.yaml"]
    assert "lm_eval --include_path" in proc.stdout
    # a rerun replaces the data folder and the task files (both rmt's); a task file of the user's
    # under one of those names is kept unless --overwrite
    again = [sys.executable, "-m", "rmt", "generate", "--tasks", "qa1", "--lengths", "0k", "--samples", "3", "--out", str(tmp_path / "d"),
             "--lm-eval-tasks", str(tmp_path / "t")]
    assert subprocess.run(again, capture_output=True, text=True).returncode == 0
    (tmp_path / "t" / "rmt_babilong_qa1_0k.yaml").write_text("task: my_variant\n")
    refused = subprocess.run(again, capture_output=True, text=True)
    assert refused.returncode == 2 and "rmt_babilong_qa1_0k.yaml, which rmt did not write" in refused.stderr
    assert (tmp_path / "t" / "rmt_babilong_qa1_0k.yaml").read_text() == "task: my_variant\n"
    assert subprocess.run(again + ["--overwrite"], capture_output=True, text=True).returncode == 0
    assert "my_variant" not in (tmp_path / "t" / "rmt_babilong_qa1_0k.yaml").read_text()
    bad = subprocess.run([sys.executable, "-m", "rmt", "generate", "--out", str(tmp_path / "x.jsonl"), "--lm-eval-tasks", str(tmp_path / "t2")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "--lm-eval-tasks reads the public layout" in bad.stderr


@pytest.mark.slow
def test_lm_eval_end_to_end_against_rmt_serve(tmp_path, wordy_chat_dir):
    """lm-eval, as a subprocess, evaluates `rmt serve` (both its API models) on our generated data."""
    records = _layout(tmp_path)
    write_lm_eval_tasks(tmp_path / "data", tmp_path / "tasks")
    server = subprocess.Popen([sys.executable, "-m", "rmt", "serve", str(wordy_chat_dir), "--port", "0", "--model-id",
                               "tiny", "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in server.stdout:
            found = re.search(r"serving tiny at (http://127\.0\.0\.1:\d+/v1)", line)
            if found:
                url = found.group(1)
                break
        else:
            pytest.fail("rmt serve did not start")
        env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "OPENAI_API_KEY": "unused"}
        for model, args, extra in (
            ("local-completions", f"base_url={url}/completions,model=tiny,tokenizer_backend=none,"
                                  "tokenized_requests=False,num_concurrent=4,max_retries=1", []),
            ("local-chat-completions", f"base_url={url}/chat/completions,model=tiny,num_concurrent=4,max_retries=1",
             ["--apply_chat_template"]),
        ):
            out = tmp_path / model
            proc = subprocess.run(["lm_eval", "run", "--model", model, "--model_args", args, "--include_path",
                                   str(tmp_path / "tasks"), "--tasks", "rmt_babilong_0k", "--output_path", str(out),
                                   *extra], capture_output=True, text=True, env=env, timeout=600)
            assert proc.returncode == 0, proc.stderr[-3000:]
            (result_file,) = out.rglob("results_*.json")
            results = json.loads(result_file.read_text())["results"]
            for task in ("qa1", "qa2"):
                acc = results[f"rmt_babilong_{task}_0k"]["acc,none"]
                assert 0.0 <= acc <= 1.0
            assert json.loads(result_file.read_text())["n-samples"]["rmt_babilong_qa1_0k"]["effective"] == 3
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.timeout(2400)  # two lm-eval/rmt runs: minutes each on a busy 2-core machine
def test_lm_eval_against_rmt_serve_answers_as_rmt_eval_with_lm_eval_prompts(tmp_path, wordy_chat_dir):
    """The cross-check a user of the field would run (issue 27, item 4): lm-eval's own task files and
    prompts, evaluating `rmt serve MODEL` through its completions API, get the same answer for every
    sample, and the same per-sample scores, as `rmt eval MODEL --prompts lm-eval-harness` on the same
    data. (`--prompts lm-eval` is lm-eval's wording in rmt's layout: <example> blocks, <context>
    tags, "Question:"; another text, so other answers from a random model.)"""
    from rmt.evaluation.store import ResultsStore

    records = _layout(tmp_path)
    write_lm_eval_tasks(tmp_path / "data", tmp_path / "tasks")
    max_gen = lm_eval_config("qa1")["generation_kwargs"]["max_gen_toks"]  # lm-eval's answer length (16)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
           "OPENAI_API_KEY": "unused"}
    server = subprocess.Popen([sys.executable, "-m", "rmt", "serve", str(wordy_chat_dir), "--port", "0", "--model-id",
                               "tiny", "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=env)
    try:
        for line in server.stdout:
            found = re.search(r"serving tiny at (http://127\.0\.0\.1:\d+/v1)", line)
            if found:
                url = found.group(1)
                break
        else:
            pytest.fail("rmt serve did not start")
        out = tmp_path / "lm-eval-out"
        proc = subprocess.run(["lm_eval", "run", "--model", "local-completions", "--model_args",
                               f"base_url={url}/completions,model=tiny,tokenizer_backend=none,tokenized_requests=False,"
                               "num_concurrent=4,max_retries=1", "--include_path", str(tmp_path / "tasks"),
                               "--tasks", "rmt_babilong_0k", "--output_path", str(out), "--log_samples"],
                              capture_output=True, text=True, env=env, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
    finally:
        server.terminate()
        server.wait(timeout=30)
    # the same model, data and lm-eval prompts through rmt eval (the plain prompt: lm-eval's
    # local-completions sends the prompt text as it is, no chat template). 0k only: the tiny model's
    # window is 512 tokens, and a longer prompt is a 400 from the server but read as its last window
    # by rmt eval (status truncated): not the same question.
    store = tmp_path / "rmt.sqlite"
    proc = subprocess.run([sys.executable, "-m", "rmt", "eval", str(wordy_chat_dir), "--data", str(tmp_path / "data"),
                           "--tasks", "qa1,qa2", "--lengths", "0k", "--samples", "3", "--prompts", "lm-eval-harness",
                           "--no-chat-template", "--max-new-tokens", str(max_gen), "--threads", "1", "--no-progress",
                           "--store", str(store)], capture_output=True, text=True, env=env, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with ResultsStore(store, read_only=True) as results:
        ours = {(r.task, r.length, r.sample_id): r for r in results.results()}
    from rmt.evaluation.evaluate import sample_ids

    theirs = {}
    for path in out.rglob("samples_rmt_babilong_qa*_*.jsonl"):
        task, length = re.search(r"samples_rmt_babilong_(qa\d+)_(\d+k)_", path.name).groups()
        cell = [{**r, "sample_id": sid} for r, sid in zip(records, sample_ids(records))
                if (r["task"], r["length"]) == (task, length)]
        for line in path.read_text().splitlines():
            sample = json.loads(line)
            record = cell[sample["doc_id"]]
            assert (sample["doc"]["question"], sample["doc"]["target"]) == (record["question"], record["target"])
            theirs[(task, length, record["sample_id"])] = sample
    assert set(theirs) == set(ours) and len(ours) == 6
    for key, sample in sorted(theirs.items()):
        answer = sample["resps"][0][0]
        assert answer.strip() == ours[key].output, (key, answer, ours[key].output)
        assert bool(sample["acc"]) == bool(ours[key].correct), (key, sample["acc"], ours[key].correct)
