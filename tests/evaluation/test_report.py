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
