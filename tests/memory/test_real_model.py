"""RMT, RMT-R and ARMT around the real pretrained model: SmolLM2-135M-Instruct (Llama, 30 layers,
9 query / 3 key-value heads (GQA), RoPE theta 1e5 from ``rope_parameters``, tied embeddings).

What the tiny from-scratch models test in tests/memory holds here too: one segment without memory
is the base model, streaming equals one call, a padded row equals the row alone (position ids under
RoPE), and one training step over two segments trains through the memory. Short segments and
batches of 2 keep the file to ~40 s on 2 shared cores. Comparisons are relative to the logits' scale
(``assert_close_to_scale``): 30 fp32 layers sum in other orders on other CPUs, while a wrong
memory, mask or position moves logits by whole units.
"""

import copy

import pytest
import torch

from rmt import RMTConfig, RecurrentMemoryTransformer
from tests.memory.tiny_models import assert_close_to_scale

TOL = 1e-4  # of the logits' scale (~30): 3e-3 absolute; a wrong position or memory moves logits by > 1


@pytest.fixture(scope="module", autouse=True)
def _threads():
    """As `rmt` itself runs: one torch thread per core not already busy (torch's default of one per
    core took 28 s instead of 2 s for the first test here on the shared 2-core machine)."""
    from rmt.threads import set_threads

    before = torch.get_num_threads()
    set_threads(None)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def base(smollm2):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32).eval()
    config = model.config
    # What this file is about: the features the tiny models do not all have at once.
    assert config.model_type == "llama" and config.num_hidden_layers == 30
    assert config.num_key_value_heads < config.num_attention_heads  # GQA
    assert config.rope_parameters["rope_theta"] == 1e5 and config.tie_word_embeddings
    return model


def _ids(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(100, 40000, (batch, length), generator=torch.Generator().manual_seed(seed))


def _wrap(base, **settings):
    return RecurrentMemoryTransformer.wrap(base, RMTConfig(**settings)).eval()


def _armt_with_memory(base, **settings):
    """ARMT whose W_v is not zero (a fresh one writes nothing): trained-like, so the memory matters."""
    model = _wrap(base, memory_kind="armt", d_mem=32, **settings)
    with torch.no_grad():
        model.memory_kind.w_value.normal_(0, 0.02, generator=torch.Generator().manual_seed(0))
    return model


@torch.no_grad()
def test_one_segment_without_memory_is_the_base_model(base):
    ids = _ids(2, 24)
    mask = torch.ones_like(ids)
    mask[1, 17:] = 0  # a shorter row: right padding
    expected = base(ids).logits
    model = _wrap(base, num_mem_tokens=0, segment_size=24)
    assert_close_to_scale(model(ids).logits, expected, TOL)
    padded = model(ids, attention_mask=mask).logits
    assert_close_to_scale(padded[1, :17], base(ids[1:, :17]).logits[0], TOL)
    # Control: the check sees one position skipped (what a misplaced memory or padding token does under RoPE).
    gap = torch.cat([torch.arange(8), torch.arange(9, 25)])[None].expand(2, -1)
    differ = float((base(ids, position_ids=gap).logits - expected).abs().max())
    assert differ > 100 * TOL * float(expected.abs().max()), differ


@torch.no_grad()
def test_a_fresh_armt_is_the_base_model_on_each_segment(base):
    ids = _ids(1, 32, seed=1)
    model = _wrap(base, memory_kind="armt", num_mem_tokens=4, segment_size=16, d_mem=32)
    got = model(ids, diagonal=False).logits
    assert_close_to_scale(got, torch.cat([base(ids[:, :16]).logits, base(ids[:, 16:]).logits], dim=1), TOL)


@torch.no_grad()
@pytest.mark.parametrize("kind", ["rmt", "armt"])
def test_stream_equals_one_call_and_a_padded_row_equals_it_alone(base, kind):
    settings = dict(num_mem_tokens=4, segment_size=16)
    model = _armt_with_memory(base, **settings) if kind == "armt" else _wrap(base, **settings)
    ids = _ids(2, 40, seed=2)  # 2 full segments and 8 tokens
    mask = torch.ones_like(ids)
    mask[1, 29:] = 0
    # ARMT: the stream runs on the diagonal schedule, the call sequentially: both schedules compared.
    whole = model(ids, attention_mask=mask, diagonal=False)
    state = model.stream(ids[:1, i:i + 12] for i in range(0, 40, 12))
    assert_close_to_scale(state.logits[0], whole.logits[0, 32:], TOL)
    alone = model(ids[1:, :29], diagonal=False)
    assert_close_to_scale(whole.logits[1, :29], alone.logits[0], TOL)
    if kind == "rmt":
        assert_close_to_scale(state.memory[0], whole.memory[0], TOL)
        assert_close_to_scale(whole.memory[1], alone.memory[0], TOL)
    else:
        assert_close_to_scale(state.memory.A[0], whole.memory.A[0], TOL)
        assert_close_to_scale(whole.memory.A[1], alone.memory.A[0], TOL)


@pytest.mark.parametrize("kind", ["rmt", "rmt-r", "armt"])
def test_one_training_step_over_two_segments_trains_through_the_memory(base, kind):
    """Loss finite, weights move, and afterwards segment 2's logits depend on what segment 1 wrote
    (for ARMT only after the step: a fresh ARMT writes nothing). With 0 memory tokens the same
    comparison shows no dependence: the control that makes the check mean something."""
    model = RecurrentMemoryTransformer.wrap(copy.deepcopy(base), RMTConfig(
        memory_kind=kind, num_mem_tokens=4, segment_size=16, **({"d_mem": 32} if kind == "armt" else {})))
    model.train()
    ids = _ids(2, 32, seed=3)
    labels = torch.full_like(ids, -100)
    labels[:, -4:] = ids[:, -4:]  # an answer at the end of segment 2
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    out = model(ids, labels=labels)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    memory_grad = model.memory_kind.w_value.grad if kind == "armt" else model.memory.grad
    assert memory_grad is not None and float(memory_grad.abs().max()) > 0  # gradient through segment 1's write
    torch.optim.SGD(model.parameters(), lr=1e-2).step()
    moved = [name for name, p in model.named_parameters() if not torch.equal(p.detach(), before[name])]
    assert any(name.startswith("memory_kind.") for name in moved)
    assert any(".layers.0." in name for name in moved) and any(".layers.29." in name for name in moved)

    model.eval()
    other = ids.clone()
    other[:, :16] = _ids(2, 16, seed=4)  # another first segment, the same second one
    with torch.no_grad():
        a, b = model(ids, diagonal=False).logits[:, 16:], model(other, diagonal=False).logits[:, 16:]
        differ, scale = float((a - b).abs().max()), float(a.abs().max())
        assert differ > 100 * TOL * scale, f"segment 2's logits moved by {differ:.3g} (scale {scale:.3g})"
        plain = _wrap(model.base_model, num_mem_tokens=0, segment_size=16)
        assert_close_to_scale(plain(other).logits[:, 16:], plain(ids).logits[:, 16:], TOL)
