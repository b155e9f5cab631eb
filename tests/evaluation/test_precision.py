"""The precision `auto` picks for `rmt demo` and `rmt eval` (issue 27, item 3): bf16 weights where bf16
is native and the model is large enough, else as saved; an explicit --dtype always wins."""

import json

import pytest
import torch

import rmt.precision as precision
from rmt.errors import UsageError
from rmt.precision import AUTO_BF16_MIN_PARAMETERS, apply_dtype, check_dtype, choose_dtype
from tests.cli_util import run_cli


@pytest.mark.parametrize("saved, parameters, native, want", [
    ("float32", 135_000_000, True, "bfloat16"),  # smollm2-135m on an AVX512-BF16 CPU
    ("float32", 135_000_000, False, None),  # no native bf16: bf16 products are slower, keep fp32
    ("float32", 30_000, True, None),  # a tiny model: overhead, not products
    ("bfloat16", 135_000_000, True, None),  # saved in bf16: as saved
    ("float16", 135_000_000, False, None),
    ("float32", AUTO_BF16_MIN_PARAMETERS, True, "bfloat16"),
])
def test_auto_chooses_bf16_only_where_native_and_large(saved, parameters, native, want):
    got, why = choose_dtype(saved, parameters, native)
    assert got == want and why.startswith("auto: ")


def test_apply_dtype_casts_as_asked_or_as_auto_decides(monkeypatch):
    import rmt.training.trainer as trainer

    small = torch.nn.Linear(8, 8)
    assert "small model" in apply_dtype(small, "auto") or "no native bf16" in apply_dtype(small, "auto")
    assert small.weight.dtype == torch.float32
    monkeypatch.setattr(trainer, "native_bf16", lambda cuda: True)
    monkeypatch.setattr(precision, "AUTO_BF16_MIN_PARAMETERS", 10)
    assert apply_dtype(small, None).startswith("auto: bf16 weights") and small.weight.dtype == torch.bfloat16
    assert apply_dtype(small, "float32") == "float32 weights (asked)" and small.weight.dtype == torch.float32
    monkeypatch.setattr(trainer, "native_bf16", lambda cuda: False)
    assert apply_dtype(small, "auto") == "auto: float32, no native bf16 here" and small.weight.dtype == torch.float32
    with pytest.raises(UsageError, match="unknown --dtype 'fp8'; allowed: auto, float32, bfloat16, float16"):
        check_dtype("fp8")


def demo(capsys, *extra):
    code, out, err = run_cli(capsys, "demo", "--tokens", "300", "--segment-size", "50", "--hidden", "16",
                             "--vocab", "50", "--threads", "1", *extra)
    assert code == 0, err
    return json.loads(out.strip().splitlines()[-1]), err


def test_demo_reports_its_precision_and_takes_dtype(capsys, monkeypatch):
    import rmt.training.trainer as trainer

    monkeypatch.setattr(trainer, "native_bf16", lambda cuda: True)
    report, err = demo(capsys)  # the tiny random GPT-2 stays fp32 under auto, even with native bf16
    assert report["dtype"] == "float32" and "small model" in report["precision"] and "precision: auto" in err
    report, _ = demo(capsys, "--dtype", "bfloat16")
    assert report["dtype"] == "bfloat16" and report["memory_finite"] and report["tokens"] == 300
    monkeypatch.setattr(precision, "AUTO_BF16_MIN_PARAMETERS", 1)  # as if it were a pretrained model
    report, _ = demo(capsys)
    assert report["dtype"] == "bfloat16" and report["precision"].startswith("auto: bf16 weights")
    monkeypatch.setattr(trainer, "native_bf16", lambda cuda: False)
    assert demo(capsys)[0]["dtype"] == "float32"


def test_eval_runs_in_the_precision_auto_picks_and_records_it(capsys, tmp_path, monkeypatch, tiny_rmt_dir):
    import rmt.training.trainer as trainer
    from rmt.evaluation.store import ResultsStore

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(trainer, "native_bf16", lambda cuda: True)
    args = ["eval", str(tiny_rmt_dir), "--lengths", "0k", "--samples", "1", "--threads", "1", "--no-progress"]
    code, out, err = run_cli(capsys, *args, "--store", "small.sqlite")
    assert code == 0, err
    assert "precision: auto: float32, a small model" in out
    monkeypatch.setattr(precision, "AUTO_BF16_MIN_PARAMETERS", 1)
    code, out, err = run_cli(capsys, *args, "--store", "auto.sqlite")
    assert code == 0 and "precision: auto: bf16 weights" in out, err
    code, out, err = run_cli(capsys, *args, "--store", "asked.sqlite", "--dtype", "float32")
    assert code == 0 and "precision: float32 weights (asked)" in out, err
    dtypes = {}
    for name in ("small", "auto", "asked"):
        with ResultsStore(tmp_path / f"{name}.sqlite", read_only=True) as store:
            dtypes[name] = {json.loads(r.producer)["decoding"]["dtype"] for r in store.results()}
    assert dtypes == {"small": {"float32"}, "auto": {"bfloat16"}, "asked": {"float32"}}


def test_a_long_cell_shows_tokens_per_second_and_time_left(capsys, tiny_rmt_dir):
    from rmt.evaluation.rmt_runner import RMTModel

    model = RMTModel(str(tiny_rmt_dir))
    prompt = model.encode("Mary went to the kitchen . " * 60)
    want = model.generate([prompt], 3)
    capsys.readouterr()
    model.show_progress, model.progress_from_tokens = True, len(prompt)
    assert model.generate([prompt], 3) == want  # the bar only watches
    err = capsys.readouterr().err
    assert f"reading {len(prompt):,} tokens" in err and "tok/s" in err, err
    model.progress_from_tokens = len(prompt) + 1  # a short cell: no bar
    model.generate([prompt], 3)
    assert "reading" not in capsys.readouterr().err
