"""generate(): identical to a naive re-run of forward() per new token (greedy), and sampling controls."""

import pytest
import torch

from rmt import RMTConfig, RecurrentMemoryTransformer
from tests.memory.test_armt import armt
from tests.memory.tiny_models import random_ids, tiny_bert, tiny_causal_lm


def _naive_greedy(model, ids, n):
    context = ids.clone()
    with torch.no_grad():
        for _ in range(n):
            nxt = model(context).logits[:, -1].argmax(-1)
            context = torch.cat([context, nxt[:, None]], dim=1)
    return context[:, ids.shape[1] :]


CASES = {
    "gpt2": lambda: RecurrentMemoryTransformer.wrap(tiny_causal_lm("gpt2"), RMTConfig(num_mem_tokens=3, segment_size=6)),
    "llama": lambda: RecurrentMemoryTransformer.wrap(tiny_causal_lm("llama"), RMTConfig(num_mem_tokens=2, segment_size=5)),
    "qwen2-no-memory": lambda: RecurrentMemoryTransformer.wrap(tiny_causal_lm("qwen2"), RMTConfig(num_mem_tokens=0, segment_size=4)),
    "llama-rmtr": lambda: RecurrentMemoryTransformer.wrap(tiny_causal_lm("llama"), RMTConfig(num_mem_tokens=2, segment_size=5, self_retrieval=True)),
    "gpt2-armt": lambda: armt("gpt2", seg=6, m=3),
    "qwen3-armt": lambda: armt("qwen3", seg=5, m=2),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("context_len", [6, 17])  # the decode crosses segment boundaries
def test_greedy_generate_equals_argmax_loop(name, context_len):
    model = CASES[name]()
    if model.retrieval is not None:
        with torch.no_grad():
            for p in model.retrieval.parameters():
                p.add_(torch.randn_like(p) * 0.1)
    ids = random_ids(2, context_len, seed=context_len)
    new = model.generate(ids, max_new_tokens=13)
    assert new.shape == (2, 13)
    assert torch.equal(new, _naive_greedy(model, ids, 13))
    assert len(set(new[0].tolist())) > 1  # the tiny model is not degenerate, so the check means something


@pytest.mark.parametrize("name", ["gpt2", "llama-rmtr", "gpt2-armt"])
def test_batched_generate_with_padding_equals_each_row_alone(name):
    model = CASES[name]()
    if model.retrieval is not None:
        with torch.no_grad():
            for p in model.retrieval.parameters():
                p.add_(torch.randn_like(p) * 0.1)
    rows = [random_ids(14, seed=1), random_ids(5, seed=2), random_ids(9, seed=3)]
    ids = torch.zeros(3, 14, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):  # left padding, as HF tokenizers do for generation
        ids[i, 14 - len(row) :] = row
        mask[i, 14 - len(row) :] = 1
    new = model.generate(ids, attention_mask=mask, max_new_tokens=8)
    for i, row in enumerate(rows):
        assert torch.equal(new[i], model.generate(row[None], max_new_tokens=8)[0])
        assert torch.equal(new[i], _naive_greedy(model, row[None], 8)[0])


def test_eos_stops_and_pads_with_eos():
    model = CASES["gpt2"]()
    ids = random_ids(2, 10, seed=7)
    full = model.generate(ids, max_new_tokens=10)
    eos = int(full[0, 3])
    out = model.generate(ids, max_new_tokens=10, eos_token_id=eos)
    first = full[0].tolist().index(eos)
    assert out[0, : first + 1].tolist() == full[0, : first + 1].tolist()
    assert bool((out[0, first:] == eos).all())
    if eos in full[1].tolist():
        assert out.shape[1] <= 10
    else:
        assert torch.equal(out[1], full[1])


def test_sampling_is_seeded_and_top_k_1_is_greedy():
    model = CASES["llama"]()
    ids = random_ids(1, 12, seed=9)
    a = model.generate(ids, max_new_tokens=10, do_sample=True, temperature=1.5, generator=torch.Generator().manual_seed(0))
    b = model.generate(ids, max_new_tokens=10, do_sample=True, temperature=1.5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    greedy = model.generate(ids, max_new_tokens=10)
    assert torch.equal(model.generate(ids, max_new_tokens=10, do_sample=True, top_k=1), greedy)
    samples = {tuple(model.generate(ids, max_new_tokens=10, do_sample=True, temperature=2.0, generator=torch.Generator().manual_seed(s))[0].tolist()) for s in range(4)}
    assert len(samples) > 1


@pytest.mark.parametrize("kwargs, match", [
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(do_sample=True, temperature=0.0), "temperature"),
    (dict(top_k=0), "top_k"),
])
def test_generate_rejects_bad_arguments(kwargs, match):
    model = CASES["gpt2"]()
    with pytest.raises(ValueError, match=match):
        model.generate(random_ids(1, 4), **kwargs)


def test_generate_needs_a_causal_lm():
    model = RecurrentMemoryTransformer.wrap(tiny_bert(), RMTConfig(num_mem_tokens=1, segment_size=4, cls_token_id=1, sep_token_id=2))
    with pytest.raises(ValueError, match="causal LM"):
        model.generate(random_ids(1, 4))
