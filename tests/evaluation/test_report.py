"""Reports rendered from real results stores: tables with every cell, a heatmap PNG of the expected size."""

import pytest

from rmt.evaluation.evaluate import evaluate, load_runner
from rmt.evaluation.report import (build_table, format_markdown, format_terminal, heatmap_pixels, length_value,
                                   load_table, save_heatmap, write_markdown)
from rmt.evaluation.store import ResultsStore

from .conftest import OracleRunner


@pytest.fixture(scope="module")
def stores(tmp_path_factory, tiny_hf_dir, records_0k, records_1k):
    """Two real stores: an oracle (every 4th answer wrong) in one; the tiny GPT-2 (past its window at 1k)
    and the oracle again under another name in the other."""
    root = tmp_path_factory.mktemp("stores")
    records = records_0k + records_1k
    evaluate(OracleRunner(wrong_every=4), records, root / "a.sqlite", progress=False)
    evaluate(load_runner(str(tiny_hf_dir), max_new_tokens=3), records, root / "b.sqlite", progress=False)
    evaluate(OracleRunner(name="rag-top5(oracle)"), records, root / "b.sqlite", progress=False)
    return root / "a.sqlite", root / "b.sqlite"


def expected_cells(records):
    cells = {}
    for r in records:
        cells.setdefault((r["task"], r["length"]), []).append(r)
    return cells


def test_table_has_every_cell(stores, records_0k, records_1k, tiny_hf_dir):
    table = load_table(stores)
    assert table.models == ["oracle", str(tiny_hf_dir), "rag-top5(oracle)"]
    assert table.tasks == ["qa1", "qa2"] and table.lengths == ["0k", "1k"]
    cells = expected_cells(records_0k + records_1k)
    # oracle: pooled over its answers, every 4th is wrong; we check each cell against the store rows
    with ResultsStore(stores[0]) as s:
        rows = list(s.results())
    for (task, length), group in cells.items():
        cell = table.cell("oracle", task, length)
        mine = [r for r in rows if (r.task, r.length) == (task, length)]
        assert cell.scored == len(group) and cell.correct == sum(r.correct for r in mine)
        assert table.cell("rag-top5(oracle)", task, length).accuracy == 100.0
    over = table.cell(str(tiny_hf_dir), "qa1", "1k")  # over the 512-token window: read as its last window
    assert over.truncated == over.scored == len(records_1k) and over.label().endswith("*")
    assert table.cell(str(tiny_hf_dir), "qa2", "1k").label() == "-"  # never evaluated

    text = format_terminal(table)
    md = format_markdown(table)
    for model in table.models:
        assert model in text and f"## {model}" in md
        for task in table.tasks:
            for length in table.lengths:
                assert table.cell(model, task, length).label() in text
            line = next(l for l in md.splitlines() if l.startswith(f"| {task} |") and model)
            assert line.count("|") == len(table.lengths) + 2
    assert md.count("| qa1 |") == md.count("| qa2 |") == len(table.models)
    assert "## Side by side" in md


def test_heatmap_png_opens_with_expected_size(stores, tmp_path):
    from PIL import Image

    table = load_table(stores)
    path = save_heatmap(table, tmp_path / "sub" / "heat.png", dpi=80)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == heatmap_pixels(table, dpi=80)
        image.load()
    assert not [p for p in path.parent.iterdir() if p.name != "heat.png"]  # no temp file left
    write_markdown(table, tmp_path / "r.md")
    assert (tmp_path / "r.md").read_text().startswith("# BABILong results")


def test_strict_mode_and_model_selection(stores):
    table = build_table([], "strict")
    assert table.models == [] and table.mode == "strict"
    with pytest.raises(ValueError, match="unknown scoring mode 'lenient'"):
        load_table(stores, mode="lenient")
    with pytest.raises(ValueError, match=r"model\(s\) gpt9 not in the results; available: oracle"):
        load_table(stores, models=["gpt9"])
    assert load_table(stores, models=["rag-top5(oracle)", "oracle"]).models == ["rag-top5(oracle)", "oracle"]


def test_length_order():
    assert sorted(["1M", "128k", "0k", "4k", "2000", "16k"], key=length_value) == ["0k", "2000", "4k", "16k", "128k", "1M"]


def test_truncated_and_over_window_cells_are_marked():
    from rmt.evaluation.store import Result

    def row(sid, length, status, correct):
        return Result("m", "qa1", length, sid, "h", status, None if status == "over_window" else "x", "x",
                      correct, correct, prompt_set="builtin, chat template")

    table = build_table([row("0", "0k", "ok", 1), row("1", "0k", "ok", 0),
                         row("0", "8k", "truncated", 1), row("1", "8k", "ok", 1), row("2", "8k", "ok", 0),
                         row("0", "16k", "over_window", None)])
    assert [table.cell("m", "qa1", l).label() for l in table.lengths] == ["50", "67*", "OW"]
    text, md = format_terminal(table), format_markdown(table)
    assert "prompts: builtin, chat template" in text and "67*" in text and "answered from the last window" in text
    assert "| qa1 | 50 | 67\\* | OW |" in md and "`*`: answered from the last window" in md
    assert "answered from the last window" not in format_terminal(build_table([row("0", "0k", "ok", 1)]))


# ------------------------------------------------------------------ no file of the user's is touched
def small_store(path, model="m", answers=("kitchen", "garden"), prompt="h"):
    """A results store of ``model``: one qa1/0k answer per entry of ``answers`` (target: kitchen)."""
    from rmt.evaluation.store import Result

    with ResultsStore(path) as s:
        for i, output in enumerate(answers):
            s.put(Result(model, "qa1", "0k", str(i), f"{prompt}{i}", "ok", output, "kitchen",
                         int(output == "kitchen"), int(output == "kitchen"), prompt_set="builtin"))
    return path


def test_report_keeps_files_it_did_not_write(capsys, tmp_path):
    """`--markdown notes.md --png pic.png` of the user's are refused (one line, nothing changed); its
    own report files are replaced on a rerun; --overwrite replaces the user's."""
    from PIL import Image

    from tests.cli_util import one_error_line, run_cli, snapshot

    store = small_store(tmp_path / "r.sqlite")
    notes, pic = tmp_path / "notes.md", tmp_path / "pic.png"
    notes.write_text("# my notes\n\nyears of work\n")
    Image.new("RGB", (4, 4), "red").save(pic)
    for args, flag in (([ "--markdown", notes], "--markdown"), (["--png", pic], "--png"),
                       (["--markdown", tmp_path / "new.md", "--png", pic], "--png")):
        before = snapshot(tmp_path)
        line = one_error_line(*run_cli(capsys, "report", store, *args)[::2])
        assert f"{flag} {args[-1]} is a file that rmt did not write" in line and "--overwrite" in line
        assert snapshot(tmp_path) == before  # new.md was not written either
    code, _, err = run_cli(capsys, "report", store, "--markdown", notes, "--png", pic, "--overwrite")
    assert code == 0, err
    assert notes.read_text().startswith("# BABILong results") and "years of work" not in notes.read_text()
    with Image.open(pic) as image:
        assert image.size != (4, 4)
    # now they are rmt report's own: a rerun replaces them without --overwrite
    small_store(tmp_path / "r.sqlite", answers=("kitchen", "kitchen"))
    code, _, err = run_cli(capsys, "report", store, "--markdown", notes, "--png", pic)
    assert code == 0, err
    assert "| qa1 | 100 |" in notes.read_text()
    # an empty file loses nothing
    empty = tmp_path / "empty.md"
    empty.write_text("")
    assert run_cli(capsys, "report", store, "--markdown", empty)[0] == 0


def _old_format_store(path, journal: str, prompt_set_column: bool):
    """A results store as an older rmt (or sqlite3 VACUUM INTO) may have left it."""
    import sqlite3

    small_store(path)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(f"PRAGMA journal_mode={journal}")
    if not prompt_set_column:
        db.execute("ALTER TABLE results DROP COLUMN prompt_set")
    db.close()
    return path


@pytest.mark.parametrize("journal, prompt_set_column", [("WAL", True), ("DELETE", True), ("WAL", False)],
                         ids=["current", "rollback-journal", "before-prompt-sets"])
def test_report_reads_stores_without_changing_them(capsys, tmp_path, journal, prompt_set_column):
    """A store in a read-only directory (chmod 444 file, 555 dir: a read-only mount for anyone but
    root) is read as it is: no journal switch, no column added, no -wal/-shm files left."""
    import hashlib
    import os

    from tests.cli_util import run_cli, snapshot

    folder = tmp_path / "ro"
    folder.mkdir()
    store = _old_format_store(folder / "r.sqlite", journal, prompt_set_column)
    store.chmod(0o444)
    folder.chmod(0o555)
    try:
        before, digest = snapshot(folder), hashlib.sha256(store.read_bytes()).hexdigest()
        code, out, err = run_cli(capsys, "report", store)
        assert code == 0, err
        assert "50" in out.split("qa1", 1)[1].splitlines()[0]  # 1 of 2 right
        assert snapshot(folder) == before and hashlib.sha256(store.read_bytes()).hexdigest() == digest
        if os.geteuid() != 0:  # root writes through the modes; anyone else gets a real read-only dir
            assert not os.access(folder, os.W_OK)
    finally:
        folder.chmod(0o755)


def test_report_reads_a_store_being_written(tmp_path):
    """While `rmt eval` writes (its -wal file holds the newest answers) the report sees them."""
    from rmt.evaluation.store import Result

    path = small_store(tmp_path / "r.sqlite")
    with ResultsStore(path) as writer:
        writer.put(Result("m", "qa1", "0k", "2", "h2", "ok", "kitchen", "kitchen", 1, 1))
        assert (tmp_path / "r.sqlite-wal").exists()
        assert load_table([path]).cell("m", "qa1", "0k").scored == 3


# ------------------------------------------------------------------ reports that do not mislead
def test_the_same_store_twice_counts_once(tmp_path):
    path = small_store(tmp_path / "r.sqlite")
    (tmp_path / "link.sqlite").symlink_to(path)
    for stores in ([path, path], [path, tmp_path / "link.sqlite"], [path, tmp_path / "." / "r.sqlite"]):
        cell = load_table(stores).cell("m", "qa1", "0k")
        assert (cell.correct, cell.scored) == (1, 2)


def test_stores_are_combined_sample_by_sample(tmp_path):
    """A copy of a store adds nothing; two runs answering the same prompts differently are refused
    (not averaged as twice the samples); the same sample ids with other prompts (another seed's
    data, as rmt reproduce's seed stores) are more samples."""
    import shutil

    a = small_store(tmp_path / "a.sqlite")
    shutil.copy(a, tmp_path / "copy.sqlite")
    cell = load_table([a, tmp_path / "copy.sqlite"]).cell("m", "qa1", "0k")
    assert (cell.correct, cell.scored) == (1, 2)

    b = small_store(tmp_path / "b.sqlite", answers=("kitchen", "kitchen"))
    with pytest.raises(ValueError, match=r"a\.sqlite and .*b\.sqlite answer the same question differently "
                                         r"\(1 answer\(s\), e\.g\. model m, qa1 at 0k, sample 1\)"):
        load_table([a, b])

    seed1 = small_store(tmp_path / "seed1.sqlite", answers=("kitchen", "kitchen"), prompt="other")
    cell = load_table([a, seed1]).cell("m", "qa1", "0k")
    assert (cell.correct, cell.scored) == (3, 4)


NASTY = ["a|b", "two\nlines", "\x1b[2J\x1b[31mred", "*bold* _it_ [x](y) <b>", "$\\nocommand$", "rtl\u202eevil"]


def test_names_and_text_are_escaped_for_markdown_terminal_and_plot(tmp_path):
    from rmt.evaluation.store import Result

    rows = [Result(model, task, length, "0", "h", "ok", "x", "x", 1, 1, prompt_set="file:p|q\x1b[0m")
            for model in NASTY for task, length in (("qa1", "0k"), ("qa2|x", "1k\n"))]
    table = build_table(rows)
    md = format_markdown(table)
    for line in md.splitlines():
        if line.startswith("|"):
            cells = line.count("|") - line.count("\\|")
            assert cells == len(table.lengths) + 2, line
    assert "\x1b" not in md and "\u202e" not in md and "<b>" not in md
    assert f"## {'a' + chr(92) + '|b'}" in md and "two\\\\nlines" in md
    text = format_terminal(table)
    assert "\x1b" not in text and "\u202e" not in text and "\\x1b[31mred" in text and "two\\nlines" in text
    lines = text.splitlines()
    assert len(lines) == len([l for l in lines if l.strip()]) + len(NASTY) - 1  # one blank line between blocks
    path = save_heatmap(table, tmp_path / "names.png", dpi=40)  # "$\nocommand$" is not parsed as mathtext
    assert path.stat().st_size > 0


def test_a_store_without_versions_is_refused_unchanged(capsys, tmp_path):
    """A store whose first run stopped before it wrote its versions is not completed by a read."""
    import sqlite3

    from tests.cli_util import one_error_line, run_cli, snapshot

    path = small_store(tmp_path / "r.sqlite")
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("DELETE FROM meta")
    db.close()
    before = snapshot(tmp_path)
    line = one_error_line(*run_cli(capsys, "report", path)[::2])
    assert "records no schema or benchmark version" in line
    assert snapshot(tmp_path) == before


@pytest.mark.skipif(__import__("os").geteuid() != 0 or not __import__("shutil").which("runuser")
                    or not __import__("os").path.exists("/usr/bin/python3"),
                    reason="needs root to run the read as the unprivileged user nobody")
def test_a_store_in_a_read_only_directory_is_read_by_an_unprivileged_user(tmp_path):
    """Root writes through file modes, so the read-only directory is checked as user nobody: the
    store reader (standard library only, so the system python runs it) reads a chmod 444 store in a
    chmod 555 directory (a plain SQLite mode=ro reader of a WAL store fails there: "attempt to write
    a readonly database", SQLite 3.40) and leaves nothing beside it."""
    import subprocess
    import tempfile
    from pathlib import Path

    import rmt.evaluation.sqlite_files as sqlite_files

    root = Path(tempfile.mkdtemp(prefix="rmt-ro-"))  # outside pytest's 0700 tmp dir
    try:
        root.chmod(0o755)
        folder = root / "ro"
        folder.mkdir()
        store = small_store(folder / "r.sqlite")
        store.chmod(0o444)
        folder.chmod(0o555)
        code = ("import sys, types\n"
                "m = types.ModuleType('sqlite_files'); exec(sys.stdin.read(), m.__dict__)\n"
                f"db = m.connect_read_only({str(store)!r})\n"
                "print(sorted(db.execute('SELECT output FROM results').fetchall()))\n")
        done = subprocess.run(["runuser", "-u", "nobody", "--", "/usr/bin/python3", "-c", code],
                              input=Path(sqlite_files.__file__).read_text(), capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout == "[('garden',), ('kitchen',)]\n"
        assert sorted(p.name for p in folder.iterdir()) == ["r.sqlite"]
    finally:
        for path in (root, root / "ro"):
            if path.exists():
                path.chmod(0o755)
        import shutil

        shutil.rmtree(root)
