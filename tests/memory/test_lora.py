"""LoRA adapters on a frozen base (rmt.memory.lora, peft): fresh adapters change nothing, every
decoder family and memory kind takes them, streaming equals one call with them, merging folds them
in (and lets the diagonal schedule run), and a saved adapter holds only what trains and loads onto
the base it names, refusing another."""

import json

import pytest
import torch

from rmt import RMTConfig, RecurrentMemoryTransformer
from rmt.errors import UsageError
from rmt.memory.lora import LoraSettings
from tests.memory.tiny_models import VOCAB, assert_close_to_scale, random_ids, tiny_causal_lm

FAMILIES = ["gpt2", "llama", "qwen2", "mistral", "qwen3"]
KINDS = {
    "rmt": dict(memory_kind="rmt"),
    "gated": dict(memory_kind="rmt", memory_write="gated"),
    "rmt-r": dict(memory_kind="rmt-r"),
    "armt": dict(memory_kind="armt", d_mem=8),
}


def _config(kind, **extra):
    return RMTConfig(num_mem_tokens=2, segment_size=8, **KINDS[kind], **extra)


def _pair(family, kind, rank=4):
    """The same wrapped model without and with fresh adapters (same seed: same memory)."""
    torch.manual_seed(1)
    plain = RecurrentMemoryTransformer.wrap(tiny_causal_lm(family), _config(kind)).eval()
    torch.manual_seed(1)
    adapted = RecurrentMemoryTransformer.wrap(tiny_causal_lm(family), _config(kind),
                                              lora=LoraSettings(rank, alpha=16, dropout=0.1), base="unused-name").eval()
    return plain, adapted


def _perturb(model, seed=3):
    """Give the adapters non-zero B matrices (fresh ones are 0), as training would."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)


@pytest.fixture(autouse=True)
def _no_fingerprint(monkeypatch):
    """``base="unused-name"`` names no real model: a fingerprint of nothing (None), as for a hub
    model that is not cached. Tests of the fingerprint check save a real base dir instead."""
    from rmt.memory import lora

    monkeypatch.setattr(lora, "resolve", lambda spec: str(spec))


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("family", FAMILIES)
def test_fresh_adapters_leave_the_logits_equal(family, kind):
    plain, adapted = _pair(family, kind)
    ids = random_ids(2, 21)
    # lora_B starts at 0, so the adapters add exactly 0; what differs is float rounding only (peft
    # hands the base layer a copy of a strided input, and a matmul may sum a copy in another order).
    assert_close_to_scale(adapted(ids).logits, plain(ids).logits)
    assert adapted.has_adapters


@pytest.mark.parametrize("kind", list(KINDS))
def test_only_the_adapters_and_the_memory_train(kind):
    _, model = _pair("llama", kind)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name or name.startswith("memory_kind.") for name in trainable)
    assert any(name.startswith("memory_kind.") for name in trainable) and any("lora_" in name for name in trainable)
    assert not model.base_model.get_input_embeddings().weight.requires_grad


@pytest.mark.parametrize("kind", list(KINDS))
def test_stream_equals_forward_with_adapters(kind):
    _, model = _pair("llama", kind)
    _perturb(model)
    ids = random_ids(1, 29)
    with torch.no_grad():
        full = model(ids, diagonal=False).logits
        streamed = model.stream([ids[:, :5], ids[:, 5:17], ids[:, 17:]], diagonal=False)
    last = (ids.shape[1] - 1) // 8 * 8
    assert_close_to_scale(streamed.logits, full[:, last:])


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_merged_adapters_give_the_same_outputs(family):
    _, model = _pair(family, "rmt")
    _perturb(model)
    ids = random_ids(2, 21)
    with torch.no_grad():
        before = model(ids).logits
        assert not torch.equal(before, _pair(family, "rmt")[0](ids).logits)  # the adapters do something
        model.merge_adapters()
        after = model(ids).logits
    assert not model.has_adapters
    # W x + s B (A x) vs (W + s B A) x: the same sum in another order, a rounding of the folded product
    assert_close_to_scale(after, before, tol=1e-4)


def test_the_diagonal_schedule_needs_merged_adapters():
    _, model = _pair("llama", "armt")
    _perturb(model)
    ids = random_ids(2, 40)
    with torch.no_grad():
        with pytest.raises(UsageError, match="merge_adapters"):
            model(ids, diagonal=True)
        sequential = model(ids, diagonal=False).logits
        model.merge_adapters()
        diagonal = model(ids, diagonal=True).logits
    assert_close_to_scale(diagonal, sequential, tol=1e-4)  # merged weights vs adapters beside them


def _save_base(tmp_path, family="llama"):
    base_dir = tmp_path / "base"
    tiny_causal_lm(family).save_pretrained(base_dir)
    return base_dir


def test_a_saved_adapter_holds_only_what_trains_and_loads_onto_its_base(tmp_path, monkeypatch):
    monkeypatch.undo()  # real names and fingerprints here
    from rmt.runs import load_causal_lm

    base_dir = _save_base(tmp_path)
    torch.manual_seed(1)
    model = RecurrentMemoryTransformer.wrap(load_causal_lm(base_dir), _config("gated"), lora=4, base=str(base_dir)).eval()
    _perturb(model)
    out = tmp_path / "adapter"
    model.save_pretrained(out)
    assert not (out / "model.safetensors").exists() and (out / "adapter_model.safetensors").is_file()
    from safetensors import safe_open

    with safe_open(str(out / "adapter_model.safetensors"), framework="pt") as f:
        keys = list(f.keys())
    assert keys and all("lora_" in k or k.startswith("memory_kind.") for k in keys)
    meta = json.loads((out / "rmt_config.json").read_text())["adapter"]
    assert meta["base"]["name"] == str(base_dir.resolve()) and meta["base"]["fingerprint"].startswith("sha256:")
    assert meta["lora"]["rank"] == 4

    ids = random_ids(2, 21)
    with torch.no_grad():
        expected = model(ids).logits
        kept = RecurrentMemoryTransformer.from_pretrained(out, merge_adapters=False)
        assert kept.has_adapters
        assert_close_to_scale(kept(ids).logits, expected)
        merged = RecurrentMemoryTransformer.from_pretrained(out)
        assert not merged.has_adapters
        assert_close_to_scale(merged(ids).logits, expected, tol=1e-4)  # folded: see test_merged_adapters_...


def test_an_adapter_refuses_a_base_with_other_weights(tmp_path, monkeypatch):
    monkeypatch.undo()
    from rmt.runs import load_causal_lm

    base_dir = _save_base(tmp_path)
    model = RecurrentMemoryTransformer.wrap(load_causal_lm(base_dir), _config("rmt"), lora=4, base=str(base_dir))
    model.save_pretrained(tmp_path / "adapter")
    tiny_causal_lm("llama", seed=5).save_pretrained(base_dir)  # other weights under the same name
    with pytest.raises(UsageError, match="an adapter on other weights is a different model") as info:
        RecurrentMemoryTransformer.from_pretrained(tmp_path / "adapter")
    assert "\n" not in str(info.value)


def test_an_adapter_whose_base_is_gone_is_one_error_line(tmp_path, monkeypatch):
    monkeypatch.undo()
    from rmt.runs import load_causal_lm

    base_dir = _save_base(tmp_path)
    model = RecurrentMemoryTransformer.wrap(load_causal_lm(base_dir), _config("rmt"), lora=4, base=str(base_dir))
    model.save_pretrained(tmp_path / "adapter")
    meta = json.loads((tmp_path / "adapter" / "rmt_config.json").read_text())
    meta["adapter"]["base"]["name"] = "no-such-model-anywhere"
    (tmp_path / "adapter" / "rmt_config.json").write_text(json.dumps(meta))
    with pytest.raises(UsageError, match="no-such-model-anywhere") as info:
        RecurrentMemoryTransformer.from_pretrained(tmp_path / "adapter")
    assert "\n" not in str(info.value)


def test_saving_adapters_without_a_base_name_is_refused():
    model = RecurrentMemoryTransformer.wrap(tiny_causal_lm("llama"), _config("rmt"), lora=4)
    model.base = None
    with pytest.raises(UsageError, match="base model's name or path"):
        model.save_pretrained("/nonexistent/never-written")


@pytest.mark.parametrize("settings, message", [
    (dict(rank=0), "lora rank must be an integer >= 1"),
    (dict(rank=4, alpha=0), "lora alpha must be a number > 0"),
    (dict(rank=4, dropout=1.0), r"lora dropout must be a number in \[0, 1\)"),
])
def test_bad_lora_settings_are_one_error_line(settings, message):
    with pytest.raises(UsageError, match=message):
        LoraSettings(**settings)


def test_lora_targets_that_match_nothing_name_the_models_layers():
    with pytest.raises(UsageError, match="q_proj"):
        RecurrentMemoryTransformer.wrap(tiny_causal_lm("llama"), _config("rmt"), base="unused-name",
                                        lora=LoraSettings(4, targets=("no_such_proj",)))


def test_vocab_check_still_applies():
    _, model = _pair("llama", "rmt")
    with pytest.raises(UsageError, match="outside the vocabulary"):
        model(torch.tensor([[VOCAB]]))
