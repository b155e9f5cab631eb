"""`rmt diagnose`: per-segment memory statistics equal a direct computation on the whole input."""

import json
import math

import pytest
import torch
from PIL import Image

from rmt.training.config import TrainConfig
from tests.cli_util import one_error_line, run_cli, snapshot

from .conftest import TINY

SEGMENTS, SAMPLES = 6, 5


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Tiny detect checkpoints of each memory kind (and one without memory), a few steps each."""
    from rmt.training.trainer import Trainer

    root = tmp_path_factory.mktemp("diagnose")
    runs = {}
    for name, overrides in {"gated": dict(memory_write="gated"), "rmt-r": dict(memory_kind="rmt-r"),
                            "armt": dict(memory_kind="armt"), "none": dict(memory=False)}.items():
        cfg = TrainConfig.from_dict({**TINY, "task": "detect", "n_facts": None, "stage_steps": 3, "output_dir": str(root / name),
                             **overrides})
        Trainer(cfg).train()
        runs[name] = root / name
    return runs


def _load(run):
    """The checkpoint, its config and data, and examples of two lengths (rows that stop reading at
    different segments: the batched trace must carry each row's own state)."""
    from transformers import AutoTokenizer

    from rmt import RecurrentMemoryTransformer
    from rmt.training.tasks import TaskData

    model = RecurrentMemoryTransformer.from_pretrained(run / "final").eval()
    cfg = TrainConfig.from_file(run / "train_config.json")
    data = TaskData(cfg, AutoTokenizer.from_pretrained(run / "final"))
    examples = [data.example(r, n) for n in (SEGMENTS, 3) for r in data.records("eval", 0, n, SAMPLES)]
    return model, cfg, data, examples


def _direct(model, examples, segment_size):
    """Per segment, from one forward pass over each whole input (output_memories=True): the mean
    over the rows still reading of the memory norm, relative change and cosine (or ARMT's norms)."""
    per = {}
    for e in examples:
        ids = torch.tensor([e["ids"]])
        with torch.no_grad():
            states = [model.initial_memory(1)] + list(model(input_ids=ids, output_memories=True).memories)
        assert len(states) - 1 == math.ceil(len(e["ids"]) / segment_size)
        for s in range(1, len(states)):
            new, old = states[s], states[s - 1]
            cell = per.setdefault(s, {"norm": [], "change": [], "cosine": [], "A": [], "z": []})
            flat_new = (new.A if hasattr(new, "A") else new).detach().flatten().double()
            flat_old = (old.A if hasattr(old, "A") else old).detach().flatten().double()
            if flat_old.norm() > 0:
                cell["change"].append(float((flat_new - flat_old).norm() / flat_old.norm()))
                cell["cosine"].append(float(flat_new @ flat_old / (flat_new.norm() * flat_old.norm())))
            if hasattr(new, "A"):
                cell["A"].append(new.A[0].double().flatten(1).norm(dim=1).tolist())
                cell["z"].append(new.z[0].double().flatten(1).norm(dim=1).tolist())
            else:
                cell["norm"].append(float(new[0].double().norm(dim=-1).mean()))
    return per


def _mean(values):
    return sum(values) / len(values) if values else None


@pytest.mark.parametrize("kind", ["gated", "rmt-r", "armt"])
def test_statistics_match_a_direct_computation(trained, kind, tmp_path):
    from rmt.training.diagnose import diagnose, trace
    from rmt.training.trainer import evaluate

    run = trained[kind]
    model, cfg, data, examples = _load(run)
    assert len({math.ceil(len(e["ids"]) / cfg.rmt.segment_size) for e in examples}) > 1
    # Batches of 4 mix the lengths, in an order that is not sorted by length.
    result = trace(model, examples[1::2] + examples[::2], cfg.rmt.segment_size, batch_size=4, progress=False)
    direct = _direct(model, examples, cfg.rmt.segment_size)
    per = result["per_segment"]
    assert per["segment"] == list(range(1, len(direct) + 1))
    rel = dict(rel=1e-4, abs=1e-6)  # batched segment calls vs one pass: fp32 summation order only
    for s, cell in direct.items():
        i = s - 1
        assert per["rows"][i] == sum(1 for e in examples if len(e["ids"]) > i * cfg.rmt.segment_size)
        if kind == "armt":
            assert per["memory_norm"] is None
            for layer, value in enumerate(per["A_norm"][i]):
                assert value == pytest.approx(_mean([a[layer] for a in cell["A"]]), **rel)
                assert per["z_norm"][i][layer] == pytest.approx(_mean([z[layer] for z in cell["z"]]), **rel)
        else:
            assert per["memory_norm"][i] == pytest.approx(_mean(cell["norm"]), **rel)
        if cell["change"]:
            assert per["relative_change"][i] == pytest.approx(_mean(cell["change"]), **rel)
            assert per["cosine"][i] == pytest.approx(_mean(cell["cosine"]), **rel)
        else:  # ARMT's first segment: A was 0 before it
            assert per["relative_change"][i] is None and per["cosine"][i] is None
    # Accuracy: the answer-token exact match that training's evaluate() computes on the same samples.
    expected = [evaluate(model, data, n, SAMPLES, batch_size=SAMPLES)["accuracy"] for n in (SEGMENTS, 3)]
    assert result["accuracy"] == pytest.approx(sum(expected) / 2)
    # Accuracy by distance: every sample counted once, in the bucket of its own fact-question distance.
    assert sum(b["samples"] for b in result["accuracy_by_distance"]) == len(examples)
    for e in examples:
        d = e["question_start"] // cfg.rmt.segment_size - min(e["fact_tokens"]) // cfg.rmt.segment_size
        assert any(b["min"] <= d <= b["max"] for b in result["accuracy_by_distance"])
    # Gated writes: the per-segment write rates, weighted by the rows reading, are forward()'s mean rate.
    if kind == "gated":
        rates, rows = 0.0, 0
        for n in (SEGMENTS, 3):
            batch = data.batch("eval", 0, n, SAMPLES)
            with torch.no_grad():
                rate = float(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).write_rate)
            reading = sum(math.ceil(int(m.sum()) / cfg.rmt.segment_size) for m in batch["attention_mask"])
            rates, rows = rates + rate * reading, rows + reading
        weighted = sum(r * n for r, n in zip(per["write_rate"], per["rows"])) / sum(per["rows"])
        assert weighted == pytest.approx(rates / rows, **rel)
    else:
        assert per["write_rate"] is None

    # diagnose(): the checkpoint's own task at one length; its files hold what it returns.
    result = diagnose(run, segments=SEGMENTS, samples=SAMPLES, out=tmp_path / "d", batch_size=3, progress=False,
                      log=lambda line: None)
    assert result["accuracy"] == pytest.approx(expected[0])
    assert result["per_segment"]["rows"][0] == SAMPLES and len(result["per_segment"]["segment"]) >= SEGMENTS
    saved = json.loads((tmp_path / "d" / "diagnose.json").read_text())
    assert saved["per_segment"] == result["per_segment"] and saved["accuracy"] == result["accuracy"]
    assert Image.open(tmp_path / "d" / "diagnose.png").size[0] > 500
    text = (tmp_path / "d" / "diagnose.txt").read_text()
    assert "accuracy" in text and ("||A||" in text) == (kind == "armt") and ("write rate" in text) == (kind == "gated")


def test_fact_offsets_point_at_the_fact(trained):
    """TaskData.example's fact_tokens are where the supporting facts' tokens are (what the distance uses)."""
    from transformers import AutoTokenizer

    from rmt.training.tasks import TaskData

    tokenizer = AutoTokenizer.from_pretrained(trained["gated"] / "final")
    for task in ("detect", "memorize", "reason"):
        data = TaskData(TrainConfig.from_dict({**TINY, "task": task, "n_facts": None}), tokenizer)
        for record in data.records("eval", 0, 4, 3):
            example = data.example(record, 4)
            facts = [record["facts"][i] for i in record["supporting"]]
            assert len(example["fact_tokens"]) == len(facts) >= 1
            for offset, fact in zip(example["fact_tokens"], facts):
                fact_ids = tokenizer(fact, add_special_tokens=False)["input_ids"]
                assert example["ids"][offset:offset + len(fact_ids)] == fact_ids
            if task == "memorize":
                assert example["fact_tokens"] == [0]


def test_cli_writes_the_files_and_prints_the_summary(trained, capsys):
    code, out, err = run_cli(capsys, "diagnose", trained["gated"], "--segments", "4", "--samples", "3", "--no-progress")
    assert code == 0, err
    folder = trained["gated"] / "diagnose"  # default: beside final/
    assert {p.name for p in folder.iterdir()} == {"diagnose.json", "diagnose.png", "diagnose.txt"}
    assert "relative change" in out and str(folder / "diagnose.png") in out


def test_bad_input_is_one_line(trained, capsys, tmp_path):
    before = snapshot(trained["gated"])
    cases = [
        ((tmp_path / "missing",), "not found"),
        ((trained["none"],), "without memory"),
        ((trained["gated"], "--segments", "0"), "--segments"),
        ((trained["gated"], "--samples", "-1"), "--samples"),
        ((tmp_path,), "not an RMT checkpoint"),
        ((trained["gated"], "--out", trained["gated"] / "train_config.json"), "is a file"),
    ]
    for args, expected in cases:
        code, out, err = run_cli(capsys, "diagnose", *args, "--no-progress")
        assert expected in one_error_line(code, err)
    assert snapshot(trained["gated"]) == before
    # A dir holding a user's file named like an output: refused, nothing in it changed.
    users = tmp_path / "users"
    users.mkdir()
    for name, text in (("diagnose.json", '{"mine": 1}'), ("diagnose.txt", "mine")):
        (users / name).write_text(text)
        code, out, err = run_cli(capsys, "diagnose", trained["gated"], "--out", users, "--no-progress")
        assert "not written by rmt diagnose" in one_error_line(code, err)
        assert (users / name).read_text() == text
    # A model dir copied without its run's train_config.json: the task is unknown.
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(trained["gated"] / "final", bare)
    code, out, err = run_cli(capsys, "diagnose", bare, "--no-progress")
    assert "train_config.json" in one_error_line(code, err)
