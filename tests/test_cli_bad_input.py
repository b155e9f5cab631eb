"""Bad input to every command: exit status 2, exactly one line on stderr, no traceback, and nothing
on disk created, removed or changed (a snapshot of the whole working tree before and after).

Each case runs in a fresh directory holding things a user might have lying around: a file, a
directory of their own, a results store, an SQLite database of another program, broken YAML and
JSONL files. Paths in a case are relative to it.
"""

import sqlite3

import pytest
import torch

from tests.cli_util import one_error_line, run_cli, snapshot

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")

CASES = [
    # rmt generate
    ("generate", ["--out", "o20.csv"], "suffix '.csv'"),
    ("generate", ["--out", "."], "is the current directory"),
    ("generate", ["--out", "mine"], "mine is a directory that rmt did not write"),
    ("generate", ["--out", "notes.txt", "--format", "jsonl"], "notes.txt is a file that rmt did not write"),
    ("generate", ["--out", "a_file/x.jsonl"], "a_file is a file, so no directory can be made there"),
    ("generate", ["--samples", "abc", "--out", "x.jsonl"], "Invalid value for '--samples'"),
    ("generate", ["--tasks", "qa21", "--out", "x.jsonl"], "qa21"),
    ("generate", ["--tasks", "qa1", "--task", "qa2", "--out", "x.jsonl"], "give --tasks once"),
    ("generate", ["--n-facts", "x", "--out", "x.jsonl"], "--n-facts 'x' must be a number"),
    ("generate", ["--format", "csv", "--out", "x.csv"], "unknown output format 'csv'"),
    ("generate", ["--no-such-flag", "--out", "x.jsonl"], "No such option: --no-such-flag"),
    ("generate", ["--out", "layout"], "layout is a directory that rmt did not write"),
    ("generate", ["--out", "d", "--lm-eval-tasks", "."], "--lm-eval-tasks . is the current directory"),
    ("generate", ["--out", "d", "--lm-eval-tasks", "a_file"], "--lm-eval-tasks a_file is a file"),
    ("generate", ["--out", "d", "--lm-eval-tasks", "d/tasks"], "is inside the dataset folder d"),
    ("generate", ["--out", "x.jsonl", "--lm-eval-tasks", "tasks"], "--lm-eval-tasks reads the public layout"),
    ("generate", ["--out", "d", "--lm-eval-tasks", "lm_tasks"], "holds rmt_babilong_qa1_0k.yaml, which rmt did not write"),
    # rmt eval (errors come before any model is loaded: "x" is never looked up)
    ("eval", ["x", "--prompts", "bad.yaml"], "prompt file bad.yaml, line 3: not valid YAML"),
    ("eval", ["x", "--prompts", "nope.yaml"], "prompt file not found: nope.yaml"),
    ("eval", ["x", "--prompt-style", "fancy"], "unknown --prompt-style 'fancy'"),
    pytest.param("eval", ["x", "--device", "cuda"], "no CUDA", marks=NO_CUDA),
    ("eval", ["x", "--device", "tpu9"], "--device 'tpu9' is not a device"),
    ("eval", ["x", "--store", "app.db"], "app.db is an SQLite database but not a results store"),
    ("eval", ["x", "--store", "/proc/r.sqlite"], "--store /proc/r.sqlite is not writable"),
    ("eval", ["x", "--store", "mine"], "--store mine is a directory; give a file name"),
    ("eval", ["x", "--data", "bad.jsonl"], "bad.jsonl, line 2: not valid JSON"),
    ("eval", ["x", "--data", "latin1.jsonl"], "latin1.jsonl, line 1: not UTF-8"),
    ("eval", ["x", "--batch-size", "0"], "--batch-size must be >= 1"),
    ("eval", ["x", "--dtype", "int3"], "unknown --dtype 'int3'; allowed: auto, float32, bfloat16, float16"),
    ("eval", ["openai:m@http://127.0.0.1:9", "--dtype", "bfloat16"], "--dtype applies to local models"),
    ("eval", ["openai:m@http://127.0.0.1:9", "--no-chat-template"], "--chat-template/--no-chat-template applies"),
    ("eval", ["openai:gpt-4o", "--samples", "1", "--lengths", "0k"], "endpoint spec must be openai:MODEL@BASE_URL"),
    # rmt report
    ("report", ["results.sqlite", "--png", "mine"], "--png mine is a directory"),
    ("report", ["results.sqlite", "--markdown", "mine"], "--markdown mine is a directory"),
    ("report", ["results.sqlite", "--markdown", "r.txt"], "--markdown r.txt has suffix '.txt'; allowed: .md, .markdown"),
    ("report", ["results.sqlite", "--markdown", "a_file/r.md"], "a_file is a file"),
    ("report", ["app.db"], "not a results store"),
    ("report", ["missing.sqlite"], "results store not found: missing.sqlite"),
    ("report", ["results.sqlite", "--mode", "lenient"], "unknown scoring mode 'lenient'"),
    # rmt train
    ("train", ["--model", "CKPT", "--output-dir", "run"], "continue it with: --num-mem-tokens 2 --segment-size 16"),
    ("train", ["--output-dir", "run", "--resume"], "--resume: no checkpoint in run/checkpoints"),
    ("train", ["--output-dir", "a_file"], "--output-dir a_file is a file"),
    ("train", ["--curriculum", "4,2", "--output-dir", "run"], "curriculum goes down"),
    ("train", ["--config", "bad.yaml", "--output-dir", "run"], "config file bad.yaml is not valid YAML"),
    ("train", ["--threads", "0", "--output-dir", "run"], "threads must be an integer >= 1"),
    ("train", ["--config", "latin1.jsonl", "--output-dir", "run"], "config file latin1.jsonl, line 1: not UTF-8"),
    # rmt serve, rmt demo, rmt quickstart
    ("serve", ["x", "--port", "70000"], "--port must be in 0..65535"),
    ("serve", ["x", "--dtype", "int3"], "unknown --dtype 'int3'; allowed: float32, bfloat16, float16"),
    ("serve", ["x", "--device", "cuda:x"], "is not a device"),
    ("demo", ["--tokens", "0"], "--tokens must be >= 1"),
    ("quickstart", ["--output-dir", "a_file"], "--output-dir a_file is a file"),
    ("quickstart", ["--eval-samples", "0", "--output-dir", "qs"], "eval_samples must be >= 1"),
    ("quickstart", ["--output-dir", "mine"], "--output-dir mine is not empty (it holds"),
    # rmt reproduce, rmt diagnose
    ("reproduce", ["--output-dir", "mine"], "--output-dir mine is not empty and was not written by rmt reproduce"),
    ("reproduce", ["--output-dir", "a_file"], "--output-dir a_file is a file"),
    ("reproduce", ["--recipes", "qa21", "--output-dir", "rep"], "unknown recipe 'qa21'"),
    ("reproduce", ["--seeds", "0,x", "--output-dir", "rep"], "--seeds must be comma-separated integers"),
    ("diagnose", ["mine"], "mine is not an RMT checkpoint"),
    ("diagnose", ["CKPT", "--segments", "0"], "--segments must be an integer >= 1"),
    ("diagnose", ["CKPT"], "no train_config.json"),
    # model names (rmt.models): nothing local, not registered, no hub
    ("eval", ["no-such-model-xyz", "--samples", "1", "--lengths", "0k"], "unknown model 'no-such-model-xyz': not a local path"),
    ("train", ["--model", "no-such-model-xyz", "--output-dir", "run"], "registered name (smollm2-135m)"),
    ("demo", ["--model", "no-such-model-xyz"], "unknown model 'no-such-model-xyz'"),
    ("demo", ["--model", "x.gguf"], "model file not found: x.gguf"),
    ("serve", ["notes.txt"], "model 'notes.txt' is a file; accepted"),
    # rmt models
    ("models", ["pull", "nope"], "'nope' is not a registered model; registered: smollm2-135m"),
    ("models", ["fetch"], "No such command 'fetch'"),
]


@pytest.fixture(scope="module")
def rmt_checkpoint(tmp_path_factory):
    """A tiny RMT checkpoint (2 memory tokens, segments of 16) with its tokenizer: `rmt train`'s
    defaults (8 memory tokens, segments of 32) do not match it."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from rmt import RMTConfig, RecurrentMemoryTransformer
    from rmt.training.tokenizer import train_word_tokenizer

    path = tmp_path_factory.mktemp("ckpt")
    tok = train_word_tokenizer(["Mary went to the kitchen . Where is Mary ? kitchen"], 100)
    base = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=20, n_embd=16, n_layer=1, n_head=2))
    RecurrentMemoryTransformer.wrap(base, RMTConfig(num_mem_tokens=2, segment_size=16)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def lying_around(root):
    """What a user's working directory might hold."""
    from rmt.evaluation.store import Result, ResultsStore

    (root / "a_file").write_text("x\n")
    (root / "notes.txt").write_text("my notes\n")
    (root / "mine").mkdir()
    (root / "mine" / "thesis.tex").write_text("years of work\n")
    (root / "bad.yaml").write_text("qa1:\n  instruction: [unclosed\n")
    # an rmt-written public-layout folder the user has since added a file to: no longer rmt's alone
    (root / "layout" / "0k").mkdir(parents=True)
    (root / "layout" / "README.md").write_text("---\npretty_name: BABILong (generated with rmt)\nconfigs:\n"
                                               "- config_name: 0k\n  data_files:\n  - split: qa1\n"
                                               "    path: 0k/qa1-*.parquet\n---\n")
    (root / "layout" / "0k" / "qa1-00000-of-00001.parquet").write_bytes(b"PAR1")
    (root / "layout" / "0k" / "my_analysis.ipynb").write_text("{}\n")
    # an lm-eval task dir holding a task file of the user's under the name rmt would give its own
    (root / "lm_tasks").mkdir()
    (root / "lm_tasks" / "rmt_babilong_qa1_0k.yaml").write_text("task: my_own_variant\n")
    (root / "bad.jsonl").write_text('{"input": "a", "question": "b", "target": "c", "task": "qa1", "length": "0k"}\n'
                                    '{"input": oops}\n')
    (root / "latin1.jsonl").write_bytes(b'{"input": "caf\xe9"}\n')
    with sqlite3.connect(root / "app.db") as db:
        db.execute("CREATE TABLE users (name TEXT)")
    db.close()
    with ResultsStore(root / "results.sqlite") as store:
        store.put(Result("m", "qa1", "0k", "0", "h", "ok", "kitchen", "kitchen", 1, 1))


@pytest.mark.parametrize("command, args, message", CASES)
def test_bad_input_is_one_line_and_changes_nothing(capsys, tmp_path, monkeypatch, rmt_checkpoint, command, args,
                                                   message):
    monkeypatch.chdir(tmp_path)
    lying_around(tmp_path)
    args = [str(rmt_checkpoint) if a == "CKPT" else a for a in args]
    before = snapshot(tmp_path)
    code, _, err = run_cli(capsys, command, *args)
    line = one_error_line(code, err)
    assert message in line, line
    assert snapshot(tmp_path) == before


def test_the_table_covers_every_command():
    from rmt.cli import app

    commands = {c.name for c in app.registered_commands} | {g.typer_instance.info.name for g in app.registered_groups}
    assert commands == {case.values[0] if hasattr(case, "values") else case[0] for case in CASES}
    assert len(CASES) >= 15
