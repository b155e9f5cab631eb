"""RMT-R invariants.

Stated invariant: the retrieval block's output projections start at zero, so a fresh RMT-R equals
plain RMT with the same weights on inputs of any length; and on the first segment the store is
empty, so RMT-R equals plain RMT there whatever the retrieval weights are.
"""

import torch

from rmt import RMTConfig, RecurrentMemoryTransformer
from tests.memory.tiny_models import random_ids, tiny_causal_lm

ATOL = 1e-5


def _pair():
    plain = RecurrentMemoryTransformer.wrap(tiny_causal_lm("gpt2"), RMTConfig(num_mem_tokens=3, segment_size=6))
    rmtr = RecurrentMemoryTransformer.wrap(tiny_causal_lm("gpt2"), RMTConfig(num_mem_tokens=3, segment_size=6, self_retrieval=True))
    rmtr.memory.data.copy_(plain.memory.data)
    return plain.eval(), rmtr.eval()


def test_fresh_rmtr_equals_plain_rmt_on_many_segments():
    plain, rmtr = _pair()
    ids = random_ids(2, 40)
    with torch.no_grad():
        a, b = plain(ids), rmtr(ids)
    torch.testing.assert_close(b.logits, a.logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(b.memory, a.memory, atol=ATOL, rtol=0)


def _perturb_retrieval(rmtr, scale: float) -> None:
    """Move the retrieval block away from its zero-output init, as training would."""
    for p in rmtr.retrieval.parameters():
        p.add_(torch.randn_like(p) * scale)


def test_trained_rmtr_equals_plain_on_first_segment_and_differs_after():
    plain, rmtr = _pair()
    with torch.no_grad():
        _perturb_retrieval(rmtr, 0.2)
        one = random_ids(2, 6)
        torch.testing.assert_close(rmtr(one).logits, plain(one).logits, atol=ATOL, rtol=0)
        many = random_ids(2, 30)
        diff = (rmtr(many).logits[:, 6:] - plain(many).logits[:, 6:]).abs().max()
    assert diff > 1e-3


def test_store_grows_by_num_mem_tokens_per_segment():
    _, rmtr = _pair()
    with torch.no_grad():
        out = rmtr(random_ids(2, 6 * 5 - 1))
        state = rmtr.stream(random_ids(1, 6 * 7))
    assert out.retrieval_store.states.shape == (2, 3 * 5, 32)
    assert state.retrieval_store.states.shape == (1, 3 * 7, 32)
    # the last stored vectors are the final memory
    torch.testing.assert_close(out.retrieval_store.states[:, -3:], out.memory)


def test_retrieval_gets_gradient():
    _, rmtr = _pair()
    with torch.no_grad():
        _perturb_retrieval(rmtr, 0.1)
    ids = random_ids(1, 24)
    rmtr(ids, labels=ids).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in rmtr.retrieval.parameters())
