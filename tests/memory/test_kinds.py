"""The memory-kind registry and interface: the config's kinds, the v0.1 spelling, and a new kind
added with one class and one registry line gets the whole API."""

import pytest
import torch

from rmt import RMTConfig, RecurrentMemoryTransformer
from rmt.memory import MEMORY_KINDS
from rmt.memory.kind_options import KIND_OPTIONS
from rmt.memory.kinds import RMTKind, RMTState
from tests.memory.tiny_models import random_ids, tiny_causal_lm


def test_self_retrieval_is_the_v0_1_spelling_of_rmt_r():
    old, new = RMTConfig(self_retrieval=True), RMTConfig(memory_kind="rmt-r")
    assert old == new and old.memory_kind == "rmt-r" and new.self_retrieval is True
    assert RMTConfig().self_retrieval is False and RMTConfig(memory_kind="armt").self_retrieval is False
    saved = new.to_dict()
    assert saved["memory_kind"] == "rmt-r" and "self_retrieval" not in saved
    assert RMTConfig.from_dict(saved) == new
    v01 = {"bptt_depth": 3, "cls_token_id": None, "num_mem_tokens": 2, "retrieval_heads": 1, "segment_size": 5,
           "self_retrieval": True, "sep_token_id": None}
    assert RMTConfig.from_dict(v01).memory_kind == "rmt-r"
    assert sorted(MEMORY_KINDS) == ["armt", "rmt", "rmt-r"]


class FrozenMemory(RMTKind):
    """A fourth kind for the test: RMT whose write rule keeps the memory it read (no recurrence)."""

    name = "frozen"

    def write(self, state, written, lengths):
        return RMTState(state.memory)


@pytest.fixture
def frozen_kind(monkeypatch):
    monkeypatch.setitem(KIND_OPTIONS, "frozen", FrozenMemory.options)  # its options' line (torch-free)
    monkeypatch.setitem(MEMORY_KINDS, "frozen", FrozenMemory)  # the one registry line


def test_a_new_kind_is_one_class_and_one_registry_line(frozen_kind, tmp_path):
    model = RecurrentMemoryTransformer.wrap(tiny_causal_lm("gpt2"), RMTConfig(memory_kind="frozen", num_mem_tokens=2, segment_size=5)).eval()
    reference = RecurrentMemoryTransformer.wrap(tiny_causal_lm("gpt2"), RMTConfig(num_mem_tokens=2, segment_size=5)).eval()
    reference.memory.data.copy_(model.memory.data)
    ids = random_ids(2, 17)
    with torch.no_grad():
        out = model(ids)
        # no recurrence: every segment equals plain RMT's first segment on it
        expected = torch.cat([reference(ids[:, i : i + 5]).logits for i in range(0, 17, 5)], dim=1)
    torch.testing.assert_close(out.logits, expected, atol=1e-5, rtol=0)
    assert torch.equal(out.memory, model.memory[None].expand(2, -1, -1))
    state = model.stream(ids[:, i : i + 4] for i in range(0, 17, 4))
    torch.testing.assert_close(state.logits, out.logits[:, -2:], atol=1e-5, rtol=0)
    assert model.generate(ids, max_new_tokens=3).shape == (2, 3)
    model.save_pretrained(tmp_path)
    assert RecurrentMemoryTransformer.from_pretrained(tmp_path).config.memory_kind == "frozen"
