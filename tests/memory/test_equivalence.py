"""Numerical equivalences of the recurrence (fp32, stated tolerances)."""

import pytest
import torch

from rmt import RMTConfig, RecurrentMemoryTransformer
from tests.memory.tiny_models import CLS, SEP, random_ids, tiny_bert, tiny_causal_lm

ATOL = 1e-5
DECODERS = ["gpt2", "llama", "qwen2"]


@pytest.mark.parametrize("kind", DECODERS + ["mistral", "qwen3"])
def test_zero_memory_one_segment_equals_base_model(kind):
    base = tiny_causal_lm(kind)
    model = RecurrentMemoryTransformer.wrap(base, RMTConfig(num_mem_tokens=0, segment_size=16))
    ids = random_ids(2, 16)
    with torch.no_grad():
        expected = base(ids).logits
        got = model(ids).logits
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


def test_zero_memory_bert_equals_base_on_documented_layout():
    # With 0 memory tokens the encoder layout [CLS] memory [SEP] segment [SEP] is [CLS][SEP] segment [SEP].
    base = tiny_bert()
    model = RecurrentMemoryTransformer.wrap(base, RMTConfig(num_mem_tokens=0, segment_size=10, cls_token_id=CLS, sep_token_id=SEP))
    ids = random_ids(2, 10)
    framed = torch.cat([torch.full((2, 1), CLS), torch.full((2, 1), SEP), ids, torch.full((2, 1), SEP)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, base(framed).logits, atol=ATOL, rtol=0)


def _models():
    yield "gpt2", RecurrentMemoryTransformer.wrap(tiny_causal_lm("gpt2"), RMTConfig(num_mem_tokens=4, segment_size=8))
    yield "llama", RecurrentMemoryTransformer.wrap(tiny_causal_lm("llama"), RMTConfig(num_mem_tokens=3, segment_size=7))
    yield "qwen2", RecurrentMemoryTransformer.wrap(tiny_causal_lm("qwen2"), RMTConfig(num_mem_tokens=2, segment_size=5))
    yield "mistral", RecurrentMemoryTransformer.wrap(tiny_causal_lm("mistral"), RMTConfig(num_mem_tokens=2, segment_size=6))
    yield "gpt2-rmtr", _randomised_retrieval(RecurrentMemoryTransformer.wrap(tiny_causal_lm("gpt2"), RMTConfig(num_mem_tokens=4, segment_size=8, self_retrieval=True)))
    yield "bert", RecurrentMemoryTransformer.wrap(tiny_bert(), RMTConfig(num_mem_tokens=3, segment_size=6, cls_token_id=CLS, sep_token_id=SEP))


def _randomised_retrieval(model):
    # The retrieval block starts as the identity; give it non-zero output projections so it matters.
    with torch.no_grad():
        for p in model.retrieval.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


MODELS = dict(_models())


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("total", [23, 24])  # a partial and a full last segment
def test_stream_equals_one_call(name, total):
    model = MODELS[name]
    ids = random_ids(2, total, seed=total)
    with torch.no_grad():
        full = model(ids)
    sizes = [1, 5, 3, 9, 2, 100]
    chunks, start = [], 0
    for size in sizes:
        if start < total:
            chunks.append(ids[:, start : start + size])
            start += size
    state = model.stream(iter(chunks))
    assert state.n_tokens == total
    torch.testing.assert_close(state.memory, full.memory, atol=ATOL, rtol=0)
    if model.adapter.is_decoder:
        last = state.logits.shape[1]
        seg = model.config.segment_size
        assert last == (total - 1) % seg + 1
        torch.testing.assert_close(state.logits, full.logits[:, -last:], atol=ATOL, rtol=0)
    else:
        torch.testing.assert_close(state.logits, full.logits, atol=ATOL, rtol=0)
    # 1-D chunks are one row
    state_1d = model.stream(ids[0, i : i + 4] for i in range(0, total, 4))
    torch.testing.assert_close(state_1d.memory, full.memory[:1], atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("side", ["right", "left"])
def test_padded_batch_equals_per_row(name, side):
    model = MODELS[name]
    lengths = [19, 4, 8, 13]
    width = max(lengths)
    rows = [random_ids(n, seed=10 + i) for i, n in enumerate(lengths)]
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        sl = slice(0, len(row)) if side == "right" else slice(width - len(row), width)
        ids[i, sl] = row
        mask[i, sl] = 1
    is_decoder = model.adapter.is_decoder
    labels = ids.masked_fill(mask == 0, -100) if is_decoder else torch.tensor([0, 1, 2, 1])
    with torch.no_grad():
        batch = model(ids, attention_mask=mask, labels=labels)
        losses, counts = [], []
        for i, row in enumerate(rows):
            single = model(row[None], labels=row[None] if is_decoder else labels[i : i + 1])
            torch.testing.assert_close(batch.memory[i], single.memory[0], atol=ATOL, rtol=0)
            if is_decoder:
                sl = mask[i].bool()
                torch.testing.assert_close(batch.logits[i, sl], single.logits[0], atol=ATOL, rtol=0)
                assert bool((batch.logits[i, ~sl] == 0).all())
                counts.append(len(row) - 1)
            else:
                torch.testing.assert_close(batch.logits[i], single.logits[0], atol=ATOL, rtol=0)
                counts.append(1)
            losses.append(single.loss)
    # the batch loss is the mean over all label tokens of all rows
    expected = sum(l * c for l, c in zip(losses, counts)) / sum(counts)
    torch.testing.assert_close(batch.loss, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", ["gpt2", "llama", "gpt2-rmtr", "bert"])
def test_memory_passed_in_continues_the_recurrence(name):
    model = MODELS[name]
    seg = model.config.segment_size
    ids = random_ids(2, 3 * seg + 2)
    with torch.no_grad():
        full = model(ids)
        first = model(ids[:, : 2 * seg])
        second = model(ids[:, 2 * seg :], memory=first.memory, retrieval_store=first.retrieval_store)
    torch.testing.assert_close(second.memory, full.memory, atol=ATOL, rtol=0)
    if model.adapter.is_decoder:
        torch.testing.assert_close(torch.cat([first.logits, second.logits], 1), full.logits, atol=ATOL, rtol=0)


def test_lm_loss_matches_hf_shift_over_all_segments():
    model = MODELS["gpt2"]
    ids = random_ids(2, 21)
    labels = ids.clone()
    labels[0, :5] = -100
    with torch.no_grad():
        out = model(ids, labels=labels)
    expected = torch.nn.functional.cross_entropy(out.logits[:, :-1].reshape(-1, out.logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(out.loss, expected, atol=ATOL, rtol=0)


def test_memory_is_initialised_at_embedding_scale():
    model = RecurrentMemoryTransformer.wrap(tiny_causal_lm("gpt2"), RMTConfig(num_mem_tokens=48, segment_size=8))
    emb_std = float(model.base_model.get_input_embeddings().weight.detach().std())
    assert abs(float(model.memory.detach().std()) / emb_std - 1) < 0.25


def test_memory_changes_the_output():
    # A second segment's logits depend on the first segment only through memory.
    model = MODELS["gpt2"]
    a, b = random_ids(1, 16, seed=3), random_ids(1, 16, seed=4)
    tail = random_ids(1, 8, seed=5)
    with torch.no_grad():
        la = model(torch.cat([a[:, :8], tail], 1)).logits[:, 8:]
        lb = model(torch.cat([b[:, :8], tail], 1)).logits[:, 8:]
    assert (la - lb).abs().max() > 1e-3


def test_dtype_and_device_follow_the_base_model():
    base = tiny_causal_lm("llama").to(torch.bfloat16)
    model = RecurrentMemoryTransformer.wrap(base, RMTConfig(num_mem_tokens=2, segment_size=4))
    assert model.memory.dtype == torch.bfloat16
    with torch.no_grad():
        out = model(random_ids(1, 9))
    assert out.logits.dtype == torch.bfloat16 and out.memory.dtype == torch.bfloat16
