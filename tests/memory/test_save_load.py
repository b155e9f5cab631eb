"""save_pretrained / from_pretrained: safetensors + JSON, identical outputs, clear errors on bad dirs."""

import json
from pathlib import Path

import pytest
import torch

from rmt.errors import UsageError
from rmt import RMTConfig, RecurrentMemoryTransformer
from tests.memory.tiny_models import CLS, SEP, random_ids, tiny_bert, tiny_causal_lm


def _models():
    rmtr = RecurrentMemoryTransformer.wrap(tiny_causal_lm("llama"), RMTConfig(num_mem_tokens=2, segment_size=5, self_retrieval=True, bptt_depth=3))
    with torch.no_grad():
        for p in rmtr.retrieval.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return {
        "gpt2-tied": RecurrentMemoryTransformer.wrap(tiny_causal_lm("gpt2"), RMTConfig(num_mem_tokens=3, segment_size=6)),
        "qwen2": RecurrentMemoryTransformer.wrap(tiny_causal_lm("qwen2"), RMTConfig(num_mem_tokens=2, segment_size=4)),
        "llama-rmtr": rmtr,
        "bert": RecurrentMemoryTransformer.wrap(tiny_bert(), RMTConfig(num_mem_tokens=2, segment_size=5, cls_token_id=CLS, sep_token_id=SEP)),
    }


@pytest.mark.parametrize("name", ["gpt2-tied", "qwen2", "llama-rmtr", "bert"])
def test_round_trip_gives_identical_outputs(name, tmp_path):
    model = _models()[name].eval()
    model.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors", "rmt_config.json"]
    loaded = RecurrentMemoryTransformer.from_pretrained(tmp_path / "ckpt")
    assert type(loaded.base_model) is type(model.base_model)
    assert loaded.config == model.config
    ids = random_ids(2, 17)
    with torch.no_grad():
        a, b = model(ids), loaded(ids)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.memory, b.memory)
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    if name == "gpt2-tied":  # tied weights stay tied
        base = loaded.base_model
        assert base.get_input_embeddings().weight.data_ptr() == base.get_output_embeddings().weight.data_ptr()


def test_dtype_is_kept(tmp_path):
    model = RecurrentMemoryTransformer.wrap(tiny_causal_lm("llama").to(torch.bfloat16), RMTConfig(num_mem_tokens=2, segment_size=4))
    model.save_pretrained(tmp_path)
    loaded = RecurrentMemoryTransformer.from_pretrained(tmp_path)
    assert loaded.dtype == torch.bfloat16
    assert torch.equal(loaded.memory, model.memory)


def test_save_keeps_other_files_and_leaves_no_temp_files(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{}")
    model = _models()["qwen2"]
    model.save_pretrained(tmp_path)
    model.save_pretrained(tmp_path)  # overwriting is fine
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors", "rmt_config.json", "tokenizer.json"]


def test_missing_directory(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        RecurrentMemoryTransformer.from_pretrained(tmp_path / "nope")


@pytest.mark.parametrize("missing", ["config.json", "model.safetensors", "rmt_config.json"])
def test_missing_file(tmp_path, missing):
    _models()["qwen2"].save_pretrained(tmp_path)
    (tmp_path / missing).unlink()
    with pytest.raises(UsageError, match=f"missing {missing}"):
        RecurrentMemoryTransformer.from_pretrained(tmp_path)


def test_corrupt_files(tmp_path):
    model = _models()["qwen2"]
    model.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="corrupt checkpoint weights"):
        RecurrentMemoryTransformer.from_pretrained(tmp_path)
    weights.write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="corrupt checkpoint weights"):
        RecurrentMemoryTransformer.from_pretrained(tmp_path)
    weights.write_bytes(good)
    (tmp_path / "rmt_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt checkpoint file"):
        RecurrentMemoryTransformer.from_pretrained(tmp_path)
    (tmp_path / "rmt_config.json").write_text(json.dumps({"rmt_config": {"segment_size": 0}, "base_model_class": "Qwen2ForCausalLM"}))
    with pytest.raises(ValueError, match="segment_size"):
        RecurrentMemoryTransformer.from_pretrained(tmp_path)


def test_weights_of_another_model_are_rejected(tmp_path):
    _models()["qwen2"].save_pretrained(tmp_path / "a")
    _models()["gpt2-tied"].save_pretrained(tmp_path / "b")
    (tmp_path / "a" / "model.safetensors").write_bytes((tmp_path / "b" / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match="do not match"):
        RecurrentMemoryTransformer.from_pretrained(tmp_path / "a")


def test_armt_round_trip_is_bit_identical(tmp_path):
    from tests.memory.test_armt import armt

    model = armt("qwen2")
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "rmt_config.json").read_text())
    assert saved["rmt_config"]["memory_kind"] == "armt" and "self_retrieval" not in saved["rmt_config"]
    loaded = RecurrentMemoryTransformer.from_pretrained(tmp_path)
    assert loaded.config == model.config
    ids = random_ids(2, 17)
    with torch.no_grad():
        a, b = model(ids), loaded(ids)
    assert torch.equal(a.logits, b.logits)
    assert torch.equal(a.memory.A, b.memory.A) and torch.equal(a.memory.z, b.memory.z)
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key


FIXTURE = Path(__file__).parent / "fixtures" / "v0.1-rmt-r"


def test_a_v0_1_rmt_r_checkpoint_loads_and_behaves_identically():
    """tests/memory/fixtures/v0.1-rmt-r was written by v0.1 (`self_retrieval: true`, parameters named
    `memory` and `retrieval.*`), with its outputs on fixed input ids."""
    from safetensors.torch import load_file

    assert json.loads((FIXTURE / "rmt_config.json").read_text())["rmt_config"]["self_retrieval"] is True
    model = RecurrentMemoryTransformer.from_pretrained(FIXTURE)
    assert model.config.memory_kind == "rmt-r" and model.retrieval is not None
    expected = load_file(str(FIXTURE / "expected_outputs.safetensors"))
    with torch.no_grad():
        out = model(expected["input_ids"])
    torch.testing.assert_close(out.logits, expected["logits"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.memory, expected["memory"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.retrieval_store.states, expected["store"], atol=1e-5, rtol=0)


def test_v0_1_weights_load_into_a_built_model_too(tmp_path):
    # The training loop's resume loads weights into an already-built model (safetensors load_model).
    from safetensors.torch import load_model

    model = RecurrentMemoryTransformer.from_pretrained(FIXTURE)
    fresh = RecurrentMemoryTransformer.wrap(tiny_causal_lm("llama", seed=5), model.config)
    missing, unexpected = load_model(fresh, str(FIXTURE / "model.safetensors"), strict=False)
    assert not missing and not unexpected
    assert torch.equal(fresh.memory, model.memory)
