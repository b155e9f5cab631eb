"""`rmt generate` end to end through a subprocess: outputs, and one-line errors with nothing written."""

import json
import subprocess
import sys

import pytest

from rmt.babilong.io import load_records


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "rmt", "generate", *args], capture_output=True, text=True, cwd=cwd)


def test_generate_jsonl_and_hf(tmp_path):
    out = tmp_path / "qa.jsonl"
    proc = run("--task", "qa1,qa2", "--lengths", "0k,1k", "--samples", "3", "--seed", "4", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 12 and {(r["task"], r["length"]) for r in rows} == {
        ("qa1", "0k"), ("qa1", "1k"), ("qa2", "0k"), ("qa2", "1k")}
    def key(r):
        return r["task"], r["length"], r["sample"]

    for name, fmt in (("hub", []), ("hf", ["--format", "hf"])):  # the public layout (default for a dir), save_to_disk
        proc = run("--task", "qa1,qa2", "--lengths", "0k,1k", "--samples", "3", "--seed", "4", "--out",
                   str(tmp_path / name), *fmt)
        assert proc.returncode == 0, proc.stderr
        # same seed, same records, whatever the format (the layout files them by length, then task)
        assert sorted(load_records(tmp_path / name), key=key) == sorted(rows, key=key)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "hub", "qa.jsonl"]


def test_cli_same_seed_same_bytes(tmp_path):
    outs = []
    for name, seed in (("a.jsonl", "3"), ("b.jsonl", "3"), ("c.jsonl", "4")):
        proc = run("--task", "qa5", "--lengths", "2k", "--samples", "2", "--seed", seed, "--out", str(tmp_path / name))
        assert proc.returncode == 0, proc.stderr
        outs.append((tmp_path / name).read_bytes())
    assert outs[0] == outs[1] and outs[0] != outs[2]


def test_generate_from_babi_files_with_books(tmp_path, babi_dir, background_dir):
    out = tmp_path / "b.parquet"
    proc = run("--task", "qa3", "--lengths", "2k", "--samples", "2", "--babi-dir", str(babi_dir),
               "--background", str(background_dir), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = load_records(out)
    assert [r["target"] for r in rows] == ["office", "office"] and rows[0]["background"] == "books:background"


@pytest.mark.parametrize("args, needle", [
    (["--task", "qa21"], "qa21"),
    (["--lengths", "0k,12q"], "12q"),
    (["--samples", "0"], "samples"),
    (["--samples", "-5"], "samples"),
    (["--lengths", "1k", "--background", "MISSING_DIR"], "not found"),
    (["--lengths", "1k", "--background", "EMPTY_DIR"], "no non-empty"),
    (["--tokenizer", "surely-not/a-cached-tokenizer"], "cannot be loaded offline"),
    (["--facts", "x"], "--facts"),
])
def test_bad_input_one_line_error_nothing_written(tmp_path, args, needle):
    (tmp_path / "empty").mkdir()
    args = [a.replace("MISSING_DIR", str(tmp_path / "missing")).replace("EMPTY_DIR", str(tmp_path / "empty"))
            for a in args]
    out = tmp_path / "out.jsonl"
    proc = run(*args, "--out", str(out))
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]  # nothing half-written


def test_unwritable_output(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    proc = run("--out", str(blocker / "out.jsonl"))  # parent is a file
    assert proc.returncode == 2 and proc.stderr.count("error:") == 1 and "Traceback" not in proc.stderr
    proc = run("--out", "/proc/out.jsonl")  # exists but cannot hold files (even for root)
    assert proc.returncode == 2 and "not writable" in proc.stderr and "Traceback" not in proc.stderr
