"""Where imports stay lazy, they buy this: `rmt --help` and the light modules load no heavy library."""

import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "datasets", "pyarrow", "matplotlib", "accelerate", "fastapi", "faiss",
         "sentence_transformers", "lm_eval")


@pytest.mark.parametrize("code", [
    "from rmt.cli import app; import typer.testing; typer.testing.CliRunner().invoke(app, ['--help'])",
    "import rmt.runs, rmt.models, rmt.errors",  # the memory side takes its file names from rmt.runs
    "import rmt.evaluation.evaluate",  # an endpoint evaluation needs no torch
])
def test_light_entry_points_import_no_heavy_library(code):
    check = f"{code}\nimport sys\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
