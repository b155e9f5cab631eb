"""Every code block in README.md and docs/*.md runs as written.

* ``python`` blocks run, each file's blocks in order in one namespace, in a fresh directory.
* ``bash`` blocks: every ``rmt`` command (also after ``accelerate launch ... -m`` / ``torchrun ... -m``)
  is parsed by the real CLI, so a renamed or misspelt option fails here. The blocks marked
  ``<!-- docs-test: run -->`` also run for real, as written, in a fresh directory (slow marker: they
  train, serve and call lm-eval).
* A block preceded by ``<!-- docs-test: skip REASON -->`` is not run (e.g. it needs an API key).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

REPO = Path(__file__).resolve().parent.parent
FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"(?:<!-- docs-test: (?P<mark>[^>]*?) -->\n+)?^```(?P<lang>\w*)\n(?P<body>.*?)^```", re.S | re.M)


def blocks(path: Path, lang: str):
    return [(m.group("mark") or "", m.group("body")) for m in FENCE.finditer(path.read_text()) if m.group("lang") == lang]


def commands(script: str) -> list[list[str]]:
    """The shell commands of a bash block: continuation lines joined, comments and heredoc bodies dropped,
    ``a && b`` split."""
    text = re.sub(r"<<'?(\w+)'?\n.*?\n\1\n", "\n", script, flags=re.S)  # heredoc bodies
    text = text.replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        for part in line.split("&&"):
            argv = shlex.split(part)
            out.append(argv[:-1] if argv[-1:] == ["&"] else argv)  # `cmd &`: started in the background
    return out


def rmt_args(argv: list[str]) -> list[str] | None:
    """The arguments of an `rmt` command in ``argv`` (direct, python -m rmt, or launched by accelerate/torchrun)."""
    if argv[:1] == ["rmt"]:
        return argv[1:]
    if "-m" in argv:
        i = argv.index("-m")
        if argv[i + 1:i + 2] == ["rmt"]:
            return argv[i + 2:]
    return None


@pytest.mark.parametrize("path", [p for p in FILES if blocks(p, "python")], ids=lambda p: p.name)
def test_python_blocks_run(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scope: dict = {"__name__": "__docs__"}
    for mark, code in blocks(path, "python"):
        if mark.startswith("skip"):
            continue
        exec(compile(code, f"{path.name} block", "exec"), scope)


@pytest.mark.parametrize("path", [p for p in FILES if blocks(p, "bash")], ids=lambda p: p.name)
def test_bash_rmt_commands_parse(path):
    from rmt.cli import app

    cli = typer.main.get_command(app)
    seen = 0
    for _, script in blocks(path, "bash"):
        for argv in commands(script):
            args = rmt_args(argv)
            if not args or args[0].startswith("-"):
                continue
            sub = cli.commands.get(args[0])
            assert sub is not None, f"{path.name}: unknown command rmt {args[0]}"
            sub.make_context(args[0], args[1:])  # raises on an unknown option or a bad value
            seen += 1
    assert seen, f"{path.name} has bash blocks but no rmt command"


RUN_BLOCKS = [(p, i) for p in FILES for i, (mark, _) in enumerate(blocks(p, "bash")) if mark == "run"]


@pytest.mark.slow
@pytest.mark.parametrize("path, index", RUN_BLOCKS, ids=[f"{p.name}-{i}" for p, i in RUN_BLOCKS])
def test_marked_bash_blocks_run(path, index, tmp_path, monkeypatch):
    """Each marked block runs in a fresh directory after the file's Python blocks (which set up what
    the text says came before, e.g. the tiny model of docs/evaluation.md)."""
    test_python_blocks_run(path, tmp_path, monkeypatch)
    _, script = blocks(path, "bash")[index]
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", ""), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, f"{path.name} block {index}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"


def test_the_readme_starts_with_the_two_commands():
    first = blocks(REPO / "README.md", "bash")[0][1].splitlines()
    assert first[:2] == ['pip install -e . -c constraints.txt && rmt quickstart',
                         'pip install -e ".[test]" -c constraints.txt && python -m pytest']
    ci = (REPO / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci == first[1]  # CI runs the README's test command, exactly
