"""rmt.runs: the one owner of a run's files and of what a model spec loads."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tokenizer_dir(path: Path, eos: bool) -> Path:
    """A word-level tokenizer saved without a pad token (with or without an eos token)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "[EOS]": 1, "mary": 2, "went": 3}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    special = {"unk_token": "[UNK]", **({"eos_token": "[EOS]"} if eos else {})}
    PreTrainedTokenizerFast(tokenizer_object=tok, **special).save_pretrained(path)
    return path


@pytest.mark.parametrize("eos, pad", [(True, "[EOS]"), (False, "[UNK]")])
def test_every_way_of_loading_a_tokenizer_pads_the_same(tmp_path, eos, pad):
    """Evaluation, training and the Python API load a tokenizer with one pad rule: eos, else unk."""
    from rmt import models, runs
    from rmt.evaluation import hf
    from rmt.training import tokenizer as training_tokenizer

    where = _tokenizer_dir(tmp_path / "tok", eos)
    loaders = [runs.load_tokenizer, models.load_tokenizer, hf.load_tokenizer, training_tokenizer.load_tokenizer]
    assert [loader(str(where)).pad_token for loader in loaders] == [pad] * len(loaders)


def _no_memory_run(run: Path) -> Path:
    """What `rmt train --no-memory` leaves: RUN/train_config.json and RUN/final/ (a plain HF model)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    final = run / "final"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=1, n_embd=8, vocab_size=4, n_positions=32)).save_pretrained(final)
    _tokenizer_dir(final, eos=True)
    (run / "train_config.json").write_text(json.dumps({"memory": False}))
    return run


def test_a_run_without_memory_stands_for_its_final_model(tmp_path):
    from rmt import runs
    from rmt.evaluation.evaluate import load_local_model

    run = _no_memory_run(tmp_path / "run")
    located = runs.locate(run)
    assert (located.rmt, located.model_dir, located.train_config) == (False, run / "final", run / "train_config.json")
    model = load_local_model(str(run), device="cpu")
    assert model.name == str(run) and model.model.config.n_layer == 1


def test_names_are_resolved_by_rmt_models(monkeypatch, tmp_path):
    from rmt import models, runs

    seen = []
    monkeypatch.setattr(models, "resolve", lambda spec: seen.append(spec) or str(tmp_path))
    located = runs.locate("smollm2-135m")
    assert seen == ["smollm2-135m"] and located.where == str(tmp_path) and not located.rmt
    assert runs.locate(tmp_path).where == str(tmp_path) and seen == ["smollm2-135m"]  # a directory: no look-up


def test_no_other_module_spells_the_run_files():
    """The file names of a run and the way a tokenizer is loaded live in rmt/runs.py (rmt/models.py
    loads what a name resolves to); every other module asks them."""
    files = r"rmt_config\.json|train_config\.json|metrics\.jsonl|trainer_state\.json|optimizer\.pt|scheduler\.pt|rng\.pt" \
            r"|config\.json|adapter_model\.safetensors"
    spelled = re.compile(rf"""["']({files}|model\.safetensors)["']|/\s*["'](final|checkpoints|diagnose)["']|["']diagnose-"""
                         r"|AutoTokenizer\.from_pretrained\(")
    offenders = []
    for path in sorted((ROOT / "rmt").rglob("*.py")):
        if path.name in ("runs.py", "models.py") or path.relative_to(ROOT).parts[1] == "babilong":
            continue  # the data side counts tokens with tokenizers of its own (rmt.babilong.tokens)
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if spelled.search(line.split("#")[0]):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []
