"""Diagonal batching (ARMT inference) equals the sequential loop; the layer-level access it is built
on equals the HF models' own forward."""

import pytest
import torch
import transformers

from rmt.memory.kinds import ARMTKind
from rmt import RMTConfig, RecurrentMemoryTransformer
from rmt.memory.adapters import DecoderLayers
from rmt.memory.diagonal import StackedLayers
from tests.memory.test_armt import ARCHS, armt
from tests.memory.tiny_models import assert_close_to_scale, random_ids, tiny_causal_lm

ATOL = 1e-5


def assert_close(a, b):
    assert_close_to_scale(a, b, tol=ATOL)


@pytest.fixture(autouse=True)
def one_thread():
    """Both schedules on one torch thread. With two, a CPU's kernels may split a product's sum
    across threads differently for the stacked (diagonal) and the per-layer shapes: on an AMD EPYC
    with AVX512 the tiny Qwen3's logits then differed by 8e-5 of their scale (its A by 5e-6), and by
    exactly 0.0 on one thread - rounding of one CPU, not a schedule error, which moves values by far
    more."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------- layer-level access
@pytest.mark.parametrize("arch", ARCHS)
def test_decoder_layers_equal_the_hf_forward(arch):
    base = tiny_causal_lm(arch)
    layers = DecoderLayers(base)
    ids = random_ids(2, 11)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    positions = torch.arange(11)[None].expand(2, -1)
    with torch.no_grad():
        for attention_mask in (None, mask):
            embeds = base.get_input_embeddings()(ids)
            hidden, context = layers.start(embeds, attention_mask, positions)
            for i in range(len(layers)):
                hidden = layers.run(i, hidden, context)
            expected = base.base_model(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=positions).last_hidden_state
            assert_close(layers.final_norm(hidden), expected)
        # with a KV cache: a prefill then one token, as generation does
        cache = transformers.DynamicCache(config=base.config)
        hidden, context = layers.start(base.get_input_embeddings()(ids[:, :10]), mask[:, :10], positions[:, :10], cache)
        for i in range(len(layers)):
            hidden = layers.run(i, hidden, context)
        hidden, context = layers.start(base.get_input_embeddings()(ids[:, 10:]), mask, positions[:, 10:], cache)
        for i in range(len(layers)):
            hidden = layers.run(i, hidden, context)
        full = base.base_model(input_ids=ids, attention_mask=mask, position_ids=positions).last_hidden_state
    assert_close(layers.final_norm(hidden)[0, -1], full[0, -1])


@pytest.mark.parametrize("arch", ARCHS)
def test_stacked_layers_equal_the_hf_layers(arch):
    # A group of two different layers on two different inputs, one of them padded.
    base = tiny_causal_lm(arch)
    layers, stacked = DecoderLayers(base), StackedLayers(base)
    ids = random_ids(2, 2, 9)
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 6:] = 0
    positions = torch.arange(9)[None].expand(2, -1)
    with torch.no_grad():
        inputs, rotary, expected = [], [], []
        for g, attention_mask in enumerate([None, mask]):
            hidden, context = layers.start(base.get_input_embeddings()(ids[g]), attention_mask, positions)
            inputs.append(hidden)
            rotary.append(context.get("position_embeddings"))
            expected.append(layers.run(g, hidden, context))
        causal = torch.ones(9, 9, dtype=torch.bool).tril()
        masks = torch.cat([causal[None, None].expand(2, 1, 9, 9), causal[None, None] & mask[:, None, None, :].bool()])
        rot = None if rotary[0] is None else tuple(torch.cat([r[i] for r in rotary]) for i in range(2))
        got = stacked(0, 1, torch.stack(inputs), masks, rot)
    for g in range(2):
        assert_close(got[g], expected[g])


# ---------------------------------------------------------------------- diagonal == sequential
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("total", [36, 34])  # full segments only; a partial last one
def test_diagonal_forward_equals_sequential(arch, total):
    model = armt(arch)
    ids = random_ids(2, total)
    with torch.no_grad():
        seq = model(ids, diagonal=False, output_memories=True)
        diag = model(ids, diagonal=True, output_memories=True)
    assert_close(diag.logits, seq.logits)
    assert_close(diag.memory.A, seq.memory.A)
    assert_close(diag.memory.z, seq.memory.z)
    for a, b in zip(diag.memories, seq.memories):
        assert_close(a.A, b.A)
        assert_close(a.z, b.z)


@pytest.mark.parametrize("arch", ["gpt2", "qwen2"])
def test_diagonal_padded_batch_equals_sequential(arch):
    model = armt(arch)
    ids = random_ids(3, 31)
    mask = torch.ones_like(ids)
    mask[0, 20:] = 0
    mask[2, :9] = 0  # left padding
    labels = ids.masked_fill(mask == 0, -100)
    with torch.no_grad():
        seq = model(ids, attention_mask=mask, labels=labels, diagonal=False)
        diag = model(ids, attention_mask=mask, labels=labels, diagonal=True)
    assert_close(diag.logits, seq.logits)
    assert_close(diag.loss, seq.loss)
    assert_close(diag.memory.A, seq.memory.A)
    assert_close(diag.memory.z, seq.memory.z)


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen3"])
def test_diagonal_stream_and_generate_equal_sequential(arch):
    model = armt(arch)
    ids = random_ids(2, 77)
    seq = model.stream((ids[:, i : i + 10] for i in range(0, 77, 10)), diagonal=False)
    diag = model.stream((ids[:, i : i + 10] for i in range(0, 77, 10)), diagonal=True)
    assert_close(diag.memory.A, seq.memory.A)
    assert_close(diag.memory.z, seq.memory.z)
    assert_close(diag.logits, seq.logits)
    mask = torch.ones_like(ids)
    mask[1, 50:] = 0
    assert torch.equal(model.generate(ids, attention_mask=mask, max_new_tokens=9, diagonal=True),
                       model.generate(ids, attention_mask=mask, max_new_tokens=9, diagonal=False))


def test_inference_uses_diagonal_batching_by_default(monkeypatch):
    calls = []
    real = ARMTKind.run_diagonal

    def spy(*args, **kwargs):
        calls.append(len(args[3]))  # the number of segments (args: kind, base model, state, segments, ...)
        yield from real(*args, **kwargs)

    monkeypatch.setattr(ARMTKind, "run_diagonal", spy)
    model = armt("gpt2")
    ids = random_ids(1, 40)
    model.stream([ids])
    model.generate(ids, max_new_tokens=2)
    with torch.no_grad():
        model(ids)
    assert calls == [7, 6, 7]  # stream, generate (the full segments before the current one), forward
    model(ids)  # with gradients: the sequential loop
    model.train()
    with torch.no_grad():
        model(ids)  # training mode (dropout): sequential
    assert len(calls) == 3


def test_diagonal_true_where_it_cannot_run_is_one_clear_error():
    model = armt("gpt2")
    ids = random_ids(1, 20)
    with pytest.raises(ValueError, match=r"diagonal=True is not possible here: .*run under torch.no_grad\(\)"):
        model(ids, diagonal=True)
    model.train()
    with torch.no_grad(), pytest.raises(ValueError, match="training mode"):
        model(ids, diagonal=True)
    rmt = RecurrentMemoryTransformer.wrap(tiny_causal_lm("gpt2"), RMTConfig(num_mem_tokens=2, segment_size=6)).eval()
    with pytest.raises(ValueError, match="diagonal batching is for memory_kind='armt'"):
        rmt.stream([ids], diagonal=True)


def test_unsupported_layer_configs_fall_back_to_the_sequential_loop():
    torch.manual_seed(0)
    config = transformers.MistralConfig(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=32,
                                        intermediate_size=64, vocab_size=97, sliding_window=4, max_position_embeddings=64)
    base = transformers.MistralForCausalLM(config).eval()
    model = RecurrentMemoryTransformer.wrap(base, RMTConfig(memory_kind="armt", num_mem_tokens=2, segment_size=6, d_mem=8)).eval()
    ids = random_ids(1, 20)
    state = model.stream([ids])  # the sliding window (4) is shorter than a segment: sequential, no error
    with torch.no_grad():
        assert_close(state.memory.A, model(ids).memory.A)
    with pytest.raises(ValueError, match=r"sliding attention window \(4\) shorter than a segment"):
        model.stream([ids], diagonal=True)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_big_models_multiply_layer_by_layer_with_the_same_results(arch, monkeypatch):
    # Above MAX_STACKED_BYTES the weights are not copied into stacks (no second copy of a big model).
    import rmt.memory.diagonal as diagonal

    monkeypatch.setattr(diagonal, "MAX_STACKED_BYTES", 0)
    model = armt(arch)
    assert not StackedLayers(model.base_model).stack_matrices
    ids = random_ids(2, 34)
    with torch.no_grad():
        seq, diag = model(ids, diagonal=False), model(ids, diagonal=True)
    assert_close(diag.logits, seq.logits)
    assert_close(diag.memory.A, seq.memory.A)
    assert_close(diag.memory.z, seq.memory.z)
