"""`rmt generate` never deletes what it did not write, and a killed generation resumes."""

import os
import stat

import pytest

import rmt.babilong.generator as generator
from rmt.babilong.io import load_records
from tests.cli_util import one_error_line, run_cli, snapshot

SMALL = ["--tasks", "qa1,qa2", "--lengths", "0k,1k", "--samples", "2", "--seed", "3"]  # 8 records


def test_a_directory_of_the_users_is_never_replaced(capsys, tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "thesis.tex").write_text("years of work")
    before = snapshot(tmp_path)
    line = one_error_line(*run_cli(capsys, "generate", *SMALL, "--out", user)[::2])
    assert "rmt did not write" in line and "--overwrite" in line
    assert snapshot(tmp_path) == before
    code, _, _ = run_cli(capsys, "generate", *SMALL, "--out", user, "--overwrite")  # said explicitly
    assert code == 0 and len(load_records(user)) == 8


@pytest.mark.parametrize("fmt", [[], ["--format", "hf"]])
def test_a_previous_output_is_replaced(capsys, tmp_path, fmt):
    out = tmp_path / "d"
    assert run_cli(capsys, "generate", *SMALL, *fmt, "--out", out)[0] == 0
    assert run_cli(capsys, "generate", *SMALL[:-1], "4", *fmt, "--out", out)[0] == 0
    assert {r["seed"] for r in load_records(out)} == {4}


def test_a_layout_folder_is_replaced_only_while_it_holds_nothing_but_what_rmt_wrote(capsys, tmp_path):
    out = tmp_path / "set"
    assert run_cli(capsys, "generate", *SMALL, "--out", out)[0] == 0
    (out / "1k" / "my_analysis.ipynb").write_text("{}")  # the user keeps something of theirs in it
    before = snapshot(tmp_path)
    line = one_error_line(*run_cli(capsys, "generate", *SMALL, "--out", out)[::2])
    assert "rmt did not write" in line and "--overwrite" in line
    assert snapshot(tmp_path) == before
    (out / "1k" / "my_analysis.ipynb").unlink()
    assert run_cli(capsys, "generate", *SMALL[:-1], "4", "--out", out)[0] == 0  # rmt's alone again: replaced
    assert {r["seed"] for r in load_records(out)} == {4}
    card = out / "README.md"  # a card of someone else's dataset (say a public snapshot) in the same layout
    card.write_text(card.read_text().replace("BABILong (generated with rmt)", "BABILong"))
    line = one_error_line(*run_cli(capsys, "generate", *SMALL, "--out", out)[::2])
    assert "rmt did not write" in line


def test_a_file_of_the_users_is_never_replaced(capsys, tmp_path):
    notes = tmp_path / "notes.json"
    notes.write_text('{"todo": ["buy milk"]}\n')
    line = one_error_line(*run_cli(capsys, "generate", *SMALL, "--out", notes)[::2])
    assert "rmt did not write" in line
    assert notes.read_text() == '{"todo": ["buy milk"]}\n'
    out = tmp_path / "a.jsonl"
    assert run_cli(capsys, "generate", *SMALL, "--out", out)[0] == 0
    assert run_cli(capsys, "generate", *SMALL, "--out", out)[0] == 0  # its own output: replaced


def test_out_dot_is_refused_and_nothing_moves(capsys, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    (work / "data.txt").write_text("x")
    monkeypatch.chdir(work)
    before = snapshot(tmp_path)
    for out in (".", "./", str(work), ".."):
        line = one_error_line(*run_cli(capsys, "generate", *SMALL, "--out", out)[::2])
        assert "is the current directory" in line
    assert snapshot(tmp_path) == before


def test_an_unknown_suffix_is_an_error_unless_the_format_is_given(capsys, tmp_path):
    line = one_error_line(*run_cli(capsys, "generate", *SMALL, "--out", tmp_path / "o20.csv")[::2])
    assert "suffix '.csv'" in line and ".jsonl" in line and ".parquet" in line
    assert list(tmp_path.iterdir()) == []
    assert run_cli(capsys, "generate", *SMALL, "--format", "jsonl", "--out", tmp_path / "o20.csv")[0] == 0
    assert len(load_records_jsonl(tmp_path / "o20.csv")) == 8


def load_records_jsonl(path):
    import json

    return [json.loads(line) for line in path.read_text().splitlines()]


def _interrupt_after(monkeypatch, n):
    """The next generation stops (as on Ctrl-C) after ``n`` records."""
    real = generator._records

    def interrupted(*args, **kwargs):
        for i, record in enumerate(real(*args, **kwargs)):
            if i == n:
                raise KeyboardInterrupt
            yield record

    monkeypatch.setattr(generator, "_records", interrupted)


def files(root):
    """{relative path: bytes} of every file under ``root``, or of ``root`` itself."""
    if root.is_file():
        return {".": root.read_bytes()}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name, fmt", [("o.jsonl", []), ("o.parquet", []), ("o_layout", []),
                                       ("o_hf", ["--format", "hf"])])
def test_a_killed_generation_resumes_and_equals_one_run(capsys, tmp_path, monkeypatch, name, fmt):
    whole, part = tmp_path / "whole", tmp_path / "part"
    whole.mkdir(), part.mkdir()
    assert run_cli(capsys, "generate", *SMALL, *fmt, "--out", whole / name)[0] == 0

    with monkeypatch.context() as m:
        _interrupt_after(m, 3)
        code, _, _ = run_cli(capsys, "generate", *SMALL, *fmt, "--out", part / name)
    assert code == 130 and not (part / name).exists()
    partial = part / f".{name}.partial"
    assert partial.read_text().count("\n") == 3
    with open(partial, "a") as f:  # a kill in the middle of writing the 4th record
        f.write('{"input": "The office is east of the')

    built = []
    real_build = generator.build_haystack
    monkeypatch.setattr(generator, "build_haystack", lambda *a, **k: built.append(1) or real_build(*a, **k))
    code, out, _ = run_cli(capsys, "generate", *SMALL, *fmt, "--out", part / name)
    assert code == 0 and "resuming: 3 of 8 samples" in out
    assert len(built) == 5  # the 3 written records were not built again
    assert load_records(part / name) == load_records(whole / name)
    assert files(part / name) == files(whole / name)  # byte for byte, every file of a folder too
    assert sorted(p.name for p in part.iterdir()) == [name]  # no partial, no temp file left


def test_a_partial_of_other_settings_is_discarded(capsys, tmp_path, monkeypatch):
    with monkeypatch.context() as m:
        _interrupt_after(m, 2)
        run_cli(capsys, "generate", *SMALL, "--out", tmp_path / "o.jsonl")
    code, out, _ = run_cli(capsys, "generate", *SMALL[:-1], "9", "--out", tmp_path / "o.jsonl")
    assert code == 0 and "discarding the partial output" in out and "resuming" not in out
    assert {r["seed"] for r in load_records(tmp_path / "o.jsonl")} == {9}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.jsonl"]


def test_bad_input_after_an_interruption_keeps_the_partial(capsys, tmp_path, monkeypatch):
    with monkeypatch.context() as m:
        _interrupt_after(m, 2)
        run_cli(capsys, "generate", *SMALL, "--out", tmp_path / "o.jsonl")
    before = snapshot(tmp_path)
    one_error_line(*run_cli(capsys, "generate", *SMALL, "--n-facts", "x", "--out", tmp_path / "o.jsonl")[::2])
    assert snapshot(tmp_path) == before


def test_outputs_have_the_usual_modes(capsys, tmp_path):
    old = os.umask(0o022)
    try:
        assert run_cli(capsys, "generate", *SMALL, "--out", tmp_path / "o.jsonl")[0] == 0
        assert run_cli(capsys, "generate", *SMALL, "--out", tmp_path / "layout")[0] == 0
        assert run_cli(capsys, "generate", *SMALL, "--format", "hf", "--out", tmp_path / "hf")[0] == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "o.jsonl").stat().st_mode) == 0o644
    for folder in (tmp_path / "layout", tmp_path / "hf"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755
        inside = list(folder.rglob("*"))
        assert {stat.S_IMODE(p.stat().st_mode) for p in inside if p.is_file()} == {0o644}
        assert {stat.S_IMODE(p.stat().st_mode) for p in inside if p.is_dir()} <= {0o755}


def test_a_resume_that_resolves_another_tokenizer_is_refused(capsys, tmp_path, monkeypatch, bpe_tokenizer_file):
    """Issue 19 item 7: the default tokenizer resolved differently on the rerun (here: GPT-2 no longer found
    where it was) must not mix two tokenizers' lengths in one output."""
    monkeypatch.setenv("RMT_GPT2_TOKENIZER", str(bpe_tokenizer_file))
    with monkeypatch.context() as m:
        _interrupt_after(m, 2)
        assert run_cli(capsys, "generate", *SMALL, "--out", tmp_path / "o.jsonl")[0] == 130
    monkeypatch.delenv("RMT_GPT2_TOKENIZER")
    monkeypatch.setattr("rmt.babilong.tokens.default_gpt2", lambda: None)  # now resolves to pretokens
    before = snapshot(tmp_path)
    code, _, err = run_cli(capsys, "generate", *SMALL, "--out", tmp_path / "o.jsonl")
    line = one_error_line(code, err)
    assert "another tokenizer" in line and "pretokens" in line and str(bpe_tokenizer_file) in line
    assert "background" not in line.split("(")[0]  # only what differs is named
    assert snapshot(tmp_path) == before  # the partial is kept
    code, out, _ = run_cli(capsys, "generate", *SMALL, "--overwrite", "--out", tmp_path / "o.jsonl")
    assert code == 0 and "discarding the partial output" in out
    assert {r["tokenizer"] for r in load_records(tmp_path / "o.jsonl")} == {"pretokens"}


def test_a_resume_with_changed_background_books_is_refused(capsys, tmp_path, monkeypatch, background_dir):
    books = tmp_path / "books"
    books.mkdir()
    for name in sorted(p.name for p in background_dir.glob("*.txt"))[:3]:
        (books / name).write_bytes((background_dir / name).read_bytes())
    args = [*SMALL, "--tokenizer", "pretokens", "--background", books, "--out", tmp_path / "out" / "o.jsonl"]
    with monkeypatch.context() as m:
        _interrupt_after(m, 2)
        assert run_cli(capsys, "generate", *args)[0] == 130
    first = sorted(books.iterdir())[0]
    original = first.read_bytes()
    first.write_bytes(original.replace(b"the", b"The", 1))  # same name, same size, other text
    code, _, err = run_cli(capsys, "generate", *args)
    line = one_error_line(code, err)
    assert "another background" in line and "books:books" in line and "tokenizer" not in line.split("(")[0]
    first.write_bytes(original)  # restored: the resume goes on
    code, out, _ = run_cli(capsys, "generate", *args)
    assert code == 0 and "resuming: 2 of 8 samples" in out


def test_duplicate_tasks_and_lengths_are_generated_once(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "generate", "--tasks", "qa1,QA1,1", "--lengths", "0k,0K,1000,1k,1K",
                           "--samples", "2", "--out", tmp_path / "o.jsonl")
    assert code == 0
    assert "note: tasks qa1 and QA1 are the same: generated once, as qa1" in out
    assert "note: lengths 1k and 1K are the same: generated once, as 1k" in out
    cells = [(r["task"], r["length"], r["sample"]) for r in load_records(tmp_path / "o.jsonl")]
    assert len(cells) == len(set(cells)) == 3 * 2  # 0k, 1000 and 1k (a named length keeps a prompt allowance)


def test_a_huge_generation_prints_its_estimate_before_starting(capsys, tmp_path, monkeypatch):
    def stop(*args, **kwargs):
        raise KeyboardInterrupt
        yield

    monkeypatch.setattr(generator, "_records", stop)
    code, out, _ = run_cli(capsys, "generate", "--lengths", "1000M", "--samples", "10", "--out", tmp_path / "o.jsonl")
    assert code == 130
    line = next(x for x in out.splitlines() if x.startswith("estimate:"))
    assert "10,000M tokens" in line and " h " in line and "GB of disk" in line and "peak memory" in line
    code, out, _ = run_cli(capsys, "generate", *SMALL, "--out", tmp_path / "small.jsonl")
    assert code == 130 and "estimate" not in out  # a small one starts without
