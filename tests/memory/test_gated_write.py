"""Gated writes (``memory_write="gated"``, RMTKind.write): each memory value is replaced or kept
exactly by a 0/1 gate; gradients pass as if the gate were its sigmoid; training adds the mean gate
probability times ``write_sparsity`` to the loss."""

import pytest
import torch

from rmt import RMTConfig, RecurrentMemoryTransformer
from tests.memory.tiny_models import random_ids, tiny_bert, tiny_causal_lm, CLS, SEP


def _pair(kind="gpt2", memory_kind="rmt", bias=1.0, **extra):
    """The same base model wrapped twice: plain replace, and gated with every gate logit = ``bias``
    (the gate weights start at zero), with the same initial memory."""
    base = tiny_causal_lm(kind)
    common = dict(num_mem_tokens=3, segment_size=8, memory_kind=memory_kind, **extra)
    plain = RecurrentMemoryTransformer.wrap(base, RMTConfig(**common)).eval()
    gated = RecurrentMemoryTransformer.wrap(base, RMTConfig(memory_write="gated", write_gate_bias=bias, **common)).eval()
    gated.memory_kind.load_state_dict(plain.memory_kind.state_dict(), strict=False)
    return plain, gated


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("memory_kind", ["rmt", "rmt-r"])
def test_fresh_gated_write_with_open_gates_is_exactly_replace(kind, memory_kind):
    plain, gated = _pair(kind, memory_kind, bias=1.0)
    ids = random_ids(2, 43)
    with torch.no_grad():
        a, b = plain(ids, labels=ids), gated(ids, labels=ids)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.memory, b.memory) and torch.equal(a.loss, b.loss)
    assert a.write_rate is None and 0.7 < float(b.write_rate) < 0.75  # sigmoid(1)


def test_shut_gates_keep_the_memory_bit_for_bit_at_any_length():
    """No gate open: every segment reads the initial memory, so the output of each segment equals that
    segment run alone, and the memory after 40 segments is the initial memory, unchanged."""
    plain, gated = _pair(bias=-1.0)
    ids = random_ids(1, 8 * 40)
    with torch.no_grad():
        out = gated(ids, output_memories=True)
        alone = torch.cat([gated(ids[:, s * 8:(s + 1) * 8]).logits for s in range(40)], dim=1)
    initial = gated.initial_memory(1)
    assert all(torch.equal(m, initial) for m in out.memories)
    assert torch.equal(out.logits, alone)
    assert not torch.equal(out.logits, plain(ids).logits)  # replace does carry memory


def test_gradients_reach_shut_gates_and_the_written_memory():
    """Straight-through: even with every gate shut (logit -5), the loss has a gradient for the gate
    (through its sigmoid, which never saturates), so training can open it."""
    _, gated = _pair(bias=-5.0)
    gated.train()
    ids = random_ids(2, 8 * 3)
    out = gated(ids, labels=ids)
    out.loss.backward()
    gate = gated.memory_kind.write_gate
    assert float(gate.bias.grad.abs().sum()) > 0 and float(gate.weight.grad.abs().sum()) > 0


def test_training_loss_adds_the_write_sparsity_term_only_in_training():
    _, gated = _pair(bias=0.5, write_sparsity=0.3)
    ids = random_ids(2, 8 * 3)
    torch.manual_seed(0)
    with torch.no_grad():
        evaluated = gated(ids, labels=ids)
        gated.train()
        for module in gated.modules():  # no dropout: compare the same function
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        trained = gated(ids, labels=ids)
    assert float(trained.loss) == pytest.approx(float(evaluated.loss) + 0.3 * float(trained.write_rate), rel=1e-6)


def test_write_rate_counts_only_segments_with_tokens():
    """A short row (padded) does not add write rates for the segments it has no tokens in: the batch's
    write rate is the mean over the (row, segment) pairs that ran."""
    _, gated = _pair(bias=0.0)
    gated.memory_kind.write_gate.weight.data.normal_(0, 0.3)  # rates that differ per segment
    ids = random_ids(2, 8 * 4)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    with torch.no_grad():
        batch = gated(ids, attention_mask=mask)
        long_row = gated(ids[:1], output_memories=True)
        short_row = gated(ids[1:, :8])
    # Recompute: row 0 ran 4 segments, row 1 ran 1; the state carries the rate of each write.
    rates = []
    state = gated.memory_kind.initial_state(1)
    with torch.no_grad():
        for s in range(4):
            _, state = gated.memory_kind.segment(gated.base_model, state, ids[:1, s * 8:(s + 1) * 8], torch.tensor([8]), False)
            rates.append(float(state.write_rate))
    expected = (sum(rates) + float(short_row.write_rate)) / 5
    assert float(batch.write_rate) == pytest.approx(expected, rel=1e-5)
    assert float(long_row.write_rate) == pytest.approx(sum(rates) / 4, rel=1e-5)


@pytest.mark.parametrize("memory_kind", ["rmt", "rmt-r"])
def test_gated_stream_padding_and_save_load(memory_kind, tmp_path):
    _, gated = _pair(memory_kind=memory_kind, bias=0.0)
    gated.memory_kind.write_gate.weight.data.normal_(0, 0.5)  # some gates open, some shut
    ids = random_ids(2, 45)
    with torch.no_grad():
        whole = gated(ids)
        streamed = gated.stream(ids[:, i:i + 7] for i in range(0, 45, 7))
        mask = torch.ones_like(ids)
        mask[1, :10] = 0  # left padding
        padded = gated(ids, attention_mask=mask)
        alone = gated(ids[1:, 10:])
    assert torch.allclose(streamed.memory, whole.memory, atol=1e-6)
    assert torch.allclose(streamed.logits, whole.logits[:, 40:], atol=1e-5)
    assert torch.allclose(padded.memory[1], alone.memory[0], atol=1e-6)
    gated.save_pretrained(tmp_path / "ckpt")
    again = RecurrentMemoryTransformer.from_pretrained(tmp_path / "ckpt")
    assert again.config.memory_write == "gated"
    with torch.no_grad():
        assert torch.equal(again(ids).logits, whole.logits)


def test_gated_write_on_an_encoder():
    base = tiny_bert()
    model = RecurrentMemoryTransformer.wrap(base, RMTConfig(num_mem_tokens=2, segment_size=8, memory_write="gated",
                                                            write_gate_bias=-1.0, cls_token_id=CLS, sep_token_id=SEP)).eval()
    ids = random_ids(1, 40)
    with torch.no_grad():
        out = model(ids, output_memories=True)
    assert all(torch.equal(m, model.initial_memory(1)) for m in out.memories)


@pytest.mark.parametrize("settings, message", [
    (dict(memory_write="gate"), "unknown memory_write 'gate'; allowed: replace, gated"),
    (dict(memory_write="gated", memory_kind="armt"), "memory_write='gated' is a write rule of memory_kind 'rmt' and 'rmt-r'"),
    (dict(memory_write="gated", write_sparsity=-0.1), "write_sparsity must be >= 0, got -0.1"),
    (dict(memory_write="gated", write_gate_bias=float("nan")), "write_gate_bias must be a finite number, got nan"),
    (dict(write_sparsity="0.1"), "write_sparsity must be a finite number, got '0.1'"),
])
def test_bad_gated_write_settings_are_one_clear_error(settings, message):
    with pytest.raises(ValueError) as info:
        RMTConfig(num_mem_tokens=2, **settings)
    assert message in str(info.value) and "\n" not in str(info.value)
