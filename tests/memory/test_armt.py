"""ARMT (memory_kind="armt"): its invariants and the loop's equivalences, in fp32.

Stated invariant (rmt/memory/kinds/armt.py): W_v starts at zero, so a fresh ARMT writes nothing
(A stays 0) and its read adds exactly 0: it equals the base model run on each segment alone, at
every length. Once W_v is non-zero (as after training), the first segment still equals the base
model (the state starts at zero) and later segments depend on earlier ones through A and z.
"""

import pytest
import torch

from rmt import RMTConfig, RecurrentMemoryTransformer
from rmt.memory import ARMTState
from tests.memory.tiny_models import assert_close_to_scale, random_ids, tiny_bert, tiny_causal_lm

# A and z sum unit-norm DPFP keys; normalising a key divides by its raw feature norm (often ~0.1 in
# these tiny random models), so fp32 rounding in the hidden states (~1e-6, e.g. masked vs unmasked
# attention, or a last layer run on fewer rows) reaches A and z about ten times larger (measured:
# 1.05e-5 of A's scale, llama streamed vs one call). A wrong state (a write missed or repeated) is
# off by O(0.1) of its scale.
STATE_TOL = 1e-4
ARCHS = ["gpt2", "llama", "qwen2", "qwen3", "mistral"]


def armt(kind="gpt2", seg=6, m=3, trained=True, seed=0, **cfg):
    """A tiny ARMT; ``trained`` gives W_v small random values, as training would (a fresh W_v is 0)."""
    base = tiny_causal_lm(kind, seed=seed)
    model = RecurrentMemoryTransformer.wrap(base, RMTConfig(memory_kind="armt", num_mem_tokens=m, segment_size=seg,
                                                            d_mem=cfg.pop("d_mem", 8), armt_heads=cfg.pop("armt_heads", 2), **cfg))
    if trained:
        torch.manual_seed(seed + 1)
        with torch.no_grad():
            model.memory_kind.w_value.normal_(0, 0.02)
    return model.eval()


def per_segment_base_logits(base, ids, seg):
    return torch.cat([base(ids[:, i : i + seg]).logits for i in range(0, ids.shape[1], seg)], dim=1)


def assert_state_close(a: ARMTState, b: ARMTState):
    assert_close_to_scale(a.A, b.A, tol=STATE_TOL)
    assert_close_to_scale(a.z, b.z, tol=STATE_TOL)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("total", [6, 23])  # one segment; several with a partial last one
def test_fresh_armt_equals_the_base_model_on_each_segment(arch, total):
    model = armt(arch, trained=False)
    ids = random_ids(2, total)
    with torch.no_grad():
        out = model(ids, diagonal=False)
        expected = per_segment_base_logits(model.base_model, ids, 6)
    assert_close_to_scale(out.logits, expected)
    assert isinstance(out.memory, ARMTState)
    assert out.memory.A.shape == (2, 2, 2, 2 * 3 * 8 // 2, 32 // 2)  # batch, layers, heads, key dim, value dim
    assert bool((out.memory.A == 0).all())  # nothing written while W_v = 0
    assert bool((out.memory.z > 0).any())  # the normaliser does count the written keys


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_trained_armt_first_segment_is_the_base_model_and_later_ones_use_memory(arch):
    model = armt(arch)
    ids = random_ids(2, 18)
    with torch.no_grad():
        out = model(ids, diagonal=False)
        expected = per_segment_base_logits(model.base_model, ids, 6)
    assert_close_to_scale(out.logits[:, :6], expected[:, :6])
    assert (out.logits[:, 6:] - expected[:, 6:]).abs().max() > 1e-2
    assert out.memory.A.abs().max() > 1e-3


def test_memory_carries_information_between_segments():
    # Same last segment, different earlier segments: only the state can tell them apart.
    model = armt("gpt2")
    tail = random_ids(1, 6, seed=5)
    with torch.no_grad():
        la = model(torch.cat([random_ids(1, 12, seed=3), tail], 1)).logits[:, 12:]
        lb = model(torch.cat([random_ids(1, 12, seed=4), tail], 1)).logits[:, 12:]
    assert (la - lb).abs().max() > 1e-3


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("diagonal", [False, True])
@pytest.mark.parametrize("total", [23, 24])
def test_stream_equals_one_forward(arch, diagonal, total):
    model = armt(arch)
    ids = random_ids(2, total, seed=total)
    with torch.no_grad():
        full = model(ids, diagonal=False)
    sizes, chunks, start = [1, 5, 3, 9, 2, 100], [], 0
    for size in sizes:
        if start < total:
            chunks.append(ids[:, start : start + size])
            start += size
    state = model.stream(iter(chunks), diagonal=diagonal)
    assert state.n_tokens == total and state.n_segments == 4
    assert_state_close(state.memory, full.memory)
    last = (total - 1) % 6 + 1
    assert_close_to_scale(state.logits, full.logits[:, -last:])
    # continue a stream from its state
    first = model.stream([ids[:, :12]], diagonal=diagonal)
    rest = model.stream([ids[:, 12:]], memory=first.memory, diagonal=diagonal)
    assert_state_close(rest.memory, full.memory)


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen3"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_padded_batch_equals_per_row(arch, side):
    model = armt(arch)
    lengths = [19, 4, 8, 13]
    width = max(lengths)
    rows = [random_ids(n, seed=10 + i) for i, n in enumerate(lengths)]
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        sl = slice(0, len(row)) if side == "right" else slice(width - len(row), width)
        ids[i, sl] = row
        mask[i, sl] = 1
    labels = ids.masked_fill(mask == 0, -100)
    with torch.no_grad():
        batch = model(ids, attention_mask=mask, labels=labels, diagonal=False)
        losses, counts = [], []
        for i, row in enumerate(rows):
            single = model(row[None], labels=row[None], diagonal=False)
            assert_state_close(ARMTState(batch.memory.A[i : i + 1], batch.memory.z[i : i + 1]), single.memory)
            sl = mask[i].bool()
            assert_close_to_scale(batch.logits[i, sl], single.logits[0])
            assert bool((batch.logits[i, ~sl] == 0).all())
            losses.append(single.loss)
            counts.append(len(row) - 1)
    expected = sum(l * c for l, c in zip(losses, counts)) / sum(counts)
    assert_close_to_scale(batch.loss, expected)


def test_memory_passed_in_continues_the_recurrence():
    model = armt("llama")
    ids = random_ids(2, 20)
    with torch.no_grad():
        full = model(ids)
        first = model(ids[:, :12])
        second = model(ids[:, 12:], memory=first.memory)
    assert_state_close(second.memory, full.memory)
    assert_close_to_scale(torch.cat([first.logits, second.logits], 1), full.logits)


def test_output_memories_gives_the_state_after_every_segment():
    model = armt("gpt2")
    ids = random_ids(1, 20)
    with torch.no_grad():
        out = model(ids, output_memories=True, diagonal=False)
        diagonal = model(ids, output_memories=True, diagonal=True)
    assert len(out.memories) == 4 and all(isinstance(s, ARMTState) for s in out.memories)
    for n, state in enumerate(out.memories):
        with torch.no_grad():
            prefix = model(ids[:, : 6 * (n + 1)], diagonal=False)
        assert_state_close(state, prefix.memory)
        assert_state_close(diagonal.memories[n], state)
    assert_state_close(out.memories[-1], out.memory)


def test_state_is_a_value_not_kept_on_the_module():
    model = armt("gpt2")
    ids = random_ids(1, 18)
    with torch.no_grad():
        a = model(ids)
        model(random_ids(1, 30, seed=9))  # another input in between changes nothing
        b = model(ids)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.memory.A, b.memory.A)


def test_bf16_model_keeps_its_dtype():
    model = RecurrentMemoryTransformer.wrap(tiny_causal_lm("llama").to(torch.bfloat16),
                                            RMTConfig(memory_kind="armt", num_mem_tokens=2, segment_size=4, d_mem=8))
    with torch.no_grad():
        out = model(random_ids(1, 9))
    assert out.logits.dtype == torch.bfloat16 and out.memory.A.dtype == torch.bfloat16


@pytest.mark.parametrize("kwargs, match", [
    (dict(memory_kind="lstm"), "unknown memory_kind 'lstm'; allowed: rmt, rmt-r, armt"),
    (dict(memory_kind="armt", d_mem=0), "d_mem must be an integer >= 1, got 0"),
    (dict(memory_kind="armt", d_mem=-4), "d_mem must be an integer >= 1, got -4"),
    (dict(memory_kind="armt", num_mem_tokens=0), "memory_kind='armt' needs num_mem_tokens >= 1"),
    (dict(memory_kind="armt", dpfp_nu=0), "dpfp_nu must be an integer >= 1, got 0"),
    (dict(memory_kind="armt", armt_heads=3, d_mem=8), "armt_heads=3 must divide d_mem=8"),
    (dict(memory_kind="armt", self_retrieval=True), "self_retrieval=True means memory_kind='rmt-r' and conflicts with memory_kind='armt'"),
])
def test_bad_armt_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RMTConfig(**kwargs)


def test_armt_needs_a_causal_lm():
    config = RMTConfig(memory_kind="armt", num_mem_tokens=2, segment_size=4, cls_token_id=1, sep_token_id=2)
    with pytest.raises(ValueError, match="memory_kind='armt' needs a causal LM .*'bert'.*use memory_kind 'rmt' or 'rmt-r'"):
        RecurrentMemoryTransformer.wrap(tiny_bert(), config)
    with pytest.raises(ValueError, match="armt_heads=3 must divide the hidden size 32"):
        RecurrentMemoryTransformer.wrap(tiny_causal_lm("gpt2"), RMTConfig(memory_kind="armt", d_mem=9, armt_heads=3))
    with pytest.raises(ValueError, match="allowed segment_size <= 124"):  # 128 learned positions - 4 memory tokens
        RecurrentMemoryTransformer.wrap(tiny_causal_lm("gpt2"), RMTConfig(memory_kind="armt", num_mem_tokens=4, segment_size=125))


def test_wrong_state_values_are_one_clear_error():
    model = armt("gpt2")
    ids = random_ids(2, 8)
    with pytest.raises(ValueError, match=r"memory must be an ARMTState with A of shape \(2, 2, 2, 24, 16\)"):
        model(ids, memory=torch.zeros(2, 3, 32))
    state = model(ids[:1]).memory
    with pytest.raises(ValueError, match=r"memory must be an ARMTState .* got A \(1, 2, 2, 24, 16\)"):
        model(ids, memory=state)
    with pytest.raises(ValueError, match="retrieval_store is for memory_kind='rmt-r'"):
        model(ids, retrieval_store=object())
