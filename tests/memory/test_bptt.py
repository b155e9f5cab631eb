"""Truncated backpropagation through memory: bptt_depth=k keeps only the last k segments in the gradient path."""

import pytest
import torch

from rmt import RMTConfig, RecurrentMemoryTransformer
from tests.memory.tiny_models import VOCAB, tiny_causal_lm

SEG, N_SEG = 4, 5


def _run(depth, kind="gpt2", self_retrieval=False):
    model = RecurrentMemoryTransformer.wrap(tiny_causal_lm(kind, tie_word_embeddings=False), RMTConfig(num_mem_tokens=2, segment_size=SEG, bptt_depth=depth, self_retrieval=self_retrieval))
    # Untied embeddings: with a tied LM head every embedding row would get gradient from the softmax.
    # Segment s uses only its own token ids (disjoint ranges), so the embedding rows of a segment's
    # tokens get gradient only if that segment is in the gradient path.
    ids = torch.cat([torch.arange(3 + 10 * s, 3 + 10 * s + SEG) for s in range(N_SEG)])[None]
    assert int(ids.max()) < VOCAB
    labels = torch.full_like(ids, -100)
    labels[0, -1] = ids[0, -1]  # loss on the last segment only (predicting its last token)
    out = model(ids, labels=labels, output_memories=True)
    for mem in out.memories:
        mem.retain_grad()
    out.loss.backward()
    emb_grad = model.base_model.get_input_embeddings().weight.grad
    segment_has_grad = [bool(emb_grad[ids[0, s * SEG : (s + 1) * SEG]].abs().sum() > 0) for s in range(N_SEG)]
    memory_has_grad = [m.grad is not None and bool(m.grad.abs().sum() > 0) for m in out.memories[:-1]]
    init_memory_grad = model.memory.grad is not None and bool(model.memory.grad.abs().sum() > 0)
    return segment_has_grad, memory_has_grad, init_memory_grad


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_full_bptt_reaches_every_segment(kind):
    segments, memories, init = _run(-1, kind)
    assert segments == [True] * N_SEG
    assert memories == [True] * (N_SEG - 1)
    assert init  # the learned initial memory gets gradient through all segments


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_truncated_bptt_cuts_older_segments(depth):
    segments, memories, init = _run(depth)
    # The last `depth` segments are in the gradient path, older ones get nothing.
    assert segments == [False] * (N_SEG - depth) + [True] * depth
    # memory written by segment s feeds segment s+1; only writes inside the window get gradient
    assert memories == [False] * (N_SEG - depth) + [True] * (depth - 1)
    assert not init


def test_depth_at_least_the_number_of_segments_is_full_bptt():
    assert _run(N_SEG) == _run(-1)


def test_truncation_also_cuts_the_retrieval_store():
    segments, memories, init = _run(2, self_retrieval=True)
    assert segments == [False] * (N_SEG - 2) + [True] * 2
    assert not init


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_activation_checkpointing_of_the_base_model_gives_the_same_gradients(kind):
    from tests.memory.tiny_models import random_ids

    grads = []
    for checkpointing in (False, True):
        base = tiny_causal_lm(kind)
        for module in base.modules():  # train mode without dropout, so both runs are deterministic
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        model = RecurrentMemoryTransformer.wrap(base, RMTConfig(num_mem_tokens=2, segment_size=5))
        if checkpointing:
            base.activation_checkpointing_enable()
        model.train()
        ids = random_ids(2, 17)
        model(ids, labels=ids).loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[1], grads[0], atol=1e-6, rtol=0)


def _run_armt(depth):
    """ARMT: the same check, and the gradients of every state's A and z."""
    model = RecurrentMemoryTransformer.wrap(tiny_causal_lm("gpt2", tie_word_embeddings=False),
                                            RMTConfig(memory_kind="armt", num_mem_tokens=2, segment_size=SEG, bptt_depth=depth, d_mem=8))
    with torch.no_grad():  # W_v = 0 writes nothing (no gradient path through memory); give it trained-like values
        model.memory_kind.w_value.normal_(0, 0.05)
    ids = torch.cat([torch.arange(3 + 10 * s, 3 + 10 * s + SEG) for s in range(N_SEG)])[None]
    labels = torch.full_like(ids, -100)
    labels[0, -1] = ids[0, -1]
    out = model(ids, labels=labels, output_memories=True)
    for state in out.memories:
        state.A.retain_grad()
        state.z.retain_grad()
    out.loss.backward()
    emb_grad = model.base_model.get_input_embeddings().weight.grad
    segment_has_grad = [bool(emb_grad[ids[0, s * SEG : (s + 1) * SEG]].abs().sum() > 0) for s in range(N_SEG)]
    A_has_grad = [s.A.grad is not None and bool(s.A.grad.abs().sum() > 0) for s in out.memories[:-1]]
    z_has_grad = [s.z.grad is not None and bool(s.z.grad.abs().sum() > 0) for s in out.memories[:-1]]
    return segment_has_grad, A_has_grad, z_has_grad


@pytest.mark.parametrize("depth", [1, 2, 3, -1])
def test_armt_truncated_bptt_cuts_through_A_and_z(depth):
    segments, A_grad, z_grad = _run_armt(depth)
    k = N_SEG if depth == -1 else depth
    assert segments == [False] * (N_SEG - k) + [True] * k
    # the state written by segment s feeds segment s+1; only writes inside the window get gradient
    assert A_grad == [False] * (N_SEG - k) + [True] * (k - 1)
    assert z_grad == [False] * (N_SEG - k) + [True] * (k - 1)
