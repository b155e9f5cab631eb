"""The work a segment skips (issue 12) and the fast paths, each equal to the plain computation.

* The last layer of a segment computes only the rows something reads (``DecoderLayers.run``'s
  ``keep_from``): equal to the whole layer's rows, values and gradients, for every decoder family.
* A stream runs the last layer's MLP on the write rows only; ``output_logits=False`` computes the
  logits its loss reads only, and gives the loss and gradients of ``output_logits=True``.
* RMT equals a bare loop calling the base model on ``[memory; segment; memory]`` (the official
  recipe), over several segments, in values and gradients.
"""

import pytest
import torch

from rmt import RMTConfig, RecurrentMemoryTransformer
from rmt.memory.adapters import DecoderLayers
from tests.memory.tiny_models import CLS, SEP, random_ids, tiny_bert, tiny_causal_lm

DECODERS = ["gpt2", "llama", "qwen2", "mistral", "qwen3"]


def close(got, expected, rel=1e-5):
    """Equal up to float rounding, relative to the tensor's scale."""
    scale = float(expected.detach().abs().max()) or 1.0
    torch.testing.assert_close(got, expected, atol=rel * scale, rtol=0)


def no_dropout(model):
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


@pytest.mark.parametrize("kind", DECODERS)
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("keep_from", [1, 9, 13])
def test_last_layer_rows_equal_the_whole_layer(kind, padded, keep_from):
    base = no_dropout(tiny_causal_lm(kind)).train()
    layers = DecoderLayers(base)
    torch.manual_seed(0)
    batch, width, hidden = 2, 14, base.get_input_embeddings().weight.shape[1]
    embeds = torch.randn(batch, width, hidden, requires_grad=True)
    positions = torch.arange(width)[None].expand(batch, -1)
    mask = None
    if padded:  # row 1: 3 padding positions in the middle (RMT's [memory; tokens; padding; memory])
        mask = torch.ones(batch, width, dtype=torch.long)
        mask[1, 6:9] = 0
    grads, outputs = [], []
    for rows in (0, keep_from):
        h, context = layers.start(embeds, mask, positions)
        out = layers.run(len(layers) - 1, h, context, keep_from=rows)
        out = out[:, keep_from:] if rows == 0 else out
        outputs.append(out)
        weights = torch.linspace(-1, 1, out.numel()).view_as(out)
        grads.append(torch.autograd.grad((out * weights).sum(), [embeds, *base.parameters()], allow_unused=True))
    assert outputs[1].shape == (batch, width - keep_from, hidden)
    close(outputs[1], outputs[0])
    for got, expected in zip(grads[1], grads[0]):
        if expected is None:
            assert got is None or float(got.abs().max()) == 0
        else:
            close(got, expected)


def test_last_layer_rows_with_eager_attention():
    base = tiny_causal_lm("gpt2")
    base.config._attn_implementation = "eager"
    layers = DecoderLayers(base)
    embeds = torch.randn(2, 10, 32)
    h, context = layers.start(embeds, None, torch.arange(10)[None].expand(2, -1))
    with torch.no_grad():
        close(layers.run(1, h, context, keep_from=6), layers.run(1, h, context)[:, 6:])


def _mlp_rows(model):
    """Rows the last layer's MLP receives, per call (a hook)."""
    layers = DecoderLayers(model.base_model)
    seen = []
    layers.layers[-1].mlp.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[1]))
    return seen


@pytest.mark.parametrize("memory_kind", ["rmt", "rmt-r", "armt"])
def test_a_stream_runs_the_last_layer_mlp_on_the_memory_rows_only(memory_kind):
    m, seg = 3, 7
    model = RecurrentMemoryTransformer.wrap(tiny_causal_lm("gpt2"), RMTConfig(memory_kind=memory_kind, num_mem_tokens=m, segment_size=seg, d_mem=8)).eval()
    ids = random_ids(1, 4 * seg + 2)
    with torch.no_grad():
        full = model(ids)
    seen = _mlp_rows(model)
    state = model.stream(ids.split(5, dim=1), diagonal=False)  # ARMT's sequential loop (diagonal batching runs its own layers)
    # every full segment: the m rows that write memory; the last (partial) segment, whose logits
    # are returned, runs whole ([memory; 2 tokens; memory], ARMT [2 tokens; memory])
    assert seen[:-1] == [m] * 4
    assert seen[-1] == (2 + m if memory_kind == "armt" else 2 + 2 * m)
    close(state.memory if memory_kind != "armt" else state.memory.A, full.memory if memory_kind != "armt" else full.memory.A)
    close(state.logits, full.logits[:, -2:])


CASES = {
    "gpt2": dict(kind="gpt2", config=dict(num_mem_tokens=3, segment_size=7)),
    "llama": dict(kind="llama", config=dict(num_mem_tokens=2, segment_size=6)),
    "qwen3": dict(kind="qwen3", config=dict(num_mem_tokens=2, segment_size=6)),
    "gpt2-gated": dict(kind="gpt2", config=dict(num_mem_tokens=3, segment_size=7, memory_write="gated", write_gate_bias=0.0)),
    "gpt2-rmt-r": dict(kind="gpt2", config=dict(num_mem_tokens=3, segment_size=7, memory_kind="rmt-r")),
    "gpt2-armt": dict(kind="gpt2", config=dict(num_mem_tokens=3, segment_size=7, memory_kind="armt", d_mem=8)),
}


def _case(name):
    case = CASES[name]
    torch.manual_seed(3)
    model = RecurrentMemoryTransformer.wrap(no_dropout(tiny_causal_lm(case["kind"])), RMTConfig(**case["config"]))
    with torch.no_grad():  # trained-like values: retrieval, ARMT's W_v and the gate all matter
        for p in model.memory_kind.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.train()


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("labels", ["every token", "answers"])
def test_output_logits_false_gives_the_same_loss_and_gradients(name, labels):
    model = _case(name)
    ids = random_ids(2, 30, seed=4)
    mask = torch.ones_like(ids)
    mask[0, :4] = 0  # left padding in row 0, right padding in row 1
    mask[1, -6:] = 0
    target = ids.masked_fill(mask == 0, -100)
    if labels == "answers":  # a 2-token answer at the end of each row, as the BABILong tasks label it
        target = torch.full_like(ids, -100)
        target[0, -2:] = ids[0, -2:]
        target[1, 22:24] = ids[1, 22:24]
    results = []
    for output_logits in (True, False):
        model.zero_grad(set_to_none=True)
        out = model(ids, attention_mask=mask, labels=target, output_logits=output_logits)
        out.loss.backward()
        grads = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]
        results.append((out, grads))
    (full, full_grads), (lean, lean_grads) = results
    assert lean.logits is None and full.logits is not None
    close(lean.loss, full.loss)
    memory = (lambda o: o.memory.A) if name.endswith("armt") else (lambda o: o.memory)
    close(memory(lean), memory(full))
    for got, expected in zip(lean_grads, full_grads):
        close(got, expected)


def test_output_logits_false_computes_the_output_layer_only_where_a_label_is_read():
    model = _case("gpt2")
    head_rows = []
    model.base_model.get_output_embeddings().register_forward_hook(lambda module, args, out: head_rows.append(args[0].shape[1]))
    ids = random_ids(1, 30, seed=5)
    target = torch.full_like(ids, -100)
    target[0, 25:27] = ids[0, 25:27]  # read at positions 24 and 25: segment 3 (positions 21..27) from its 4th
    model(ids, labels=target, output_logits=False).loss.backward()
    assert head_rows == [7 - 3]  # one call: positions 24..27 of the fourth segment
    head_rows.clear()
    model(ids, labels=target)  # the default computes every position's logits
    assert sum(head_rows) == 30
    head_rows.clear()
    with torch.no_grad():
        out = model(ids, output_logits=False)  # no labels: no logits at all, only the memory
    assert head_rows == [] and out.logits is None and out.loss is None


def test_output_logits_false_on_an_encoder_keeps_the_loss():
    model = RecurrentMemoryTransformer.wrap(tiny_bert(), RMTConfig(num_mem_tokens=3, segment_size=6, cls_token_id=CLS, sep_token_id=SEP))
    ids, labels = random_ids(2, 14), torch.tensor([0, 2])
    with torch.no_grad():
        full, lean = model(ids, labels=labels), model(ids, labels=labels, output_logits=False)
    assert lean.logits is None
    assert torch.equal(lean.loss, full.loss) and torch.equal(lean.memory, full.memory)


@pytest.mark.parametrize("kind", ["gpt2", "llama", "qwen2"])
def test_rmt_equals_a_bare_loop_over_the_base_model(kind):
    """The official recipe (MemoryCell + RecurrentWrapper): [memory; segment; memory] through the
    base model, the segment's logits kept, the last hidden states at the write positions carried."""
    m, seg = 3, 6
    base = no_dropout(tiny_causal_lm(kind)).train()
    model = RecurrentMemoryTransformer.wrap(base, RMTConfig(num_mem_tokens=m, segment_size=seg)).train()
    ids = random_ids(2, 4 * seg, seed=6)

    def bare():
        state = model.memory[None].expand(2, -1, -1)
        logits = []
        for start in range(0, ids.shape[1], seg):
            x = torch.cat([state, base.get_input_embeddings()(ids[:, start : start + seg]), state], dim=1)
            hidden = base(inputs_embeds=x, output_hidden_states=True).hidden_states[-1]
            logits.append(base.get_output_embeddings()(hidden[:, m:-m]))
            state = hidden[:, -m:]
        logits = torch.cat(logits, dim=1)
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
        return logits, state, loss

    results = []
    for run in (bare, lambda: (lambda o: (o.logits, o.memory, o.loss))(model(ids, labels=ids))):
        model.zero_grad(set_to_none=True)
        logits, memory, loss = run()
        loss.backward()
        results.append((logits, memory, loss, [p.grad.clone() for p in model.parameters()]))
    (ref_logits, ref_memory, ref_loss, ref_grads), (logits, memory, loss, grads) = results
    close(logits, ref_logits)
    close(memory, ref_memory)
    close(loss, ref_loss)
    for got, expected in zip(grads, ref_grads):
        close(got, expected)


def _can_compile() -> bool:
    try:
        torch.compile(lambda x: x * 2 + 1)(torch.ones(3))
        return True
    except Exception:  # no C++ compiler / inductor on this machine
        return False


@pytest.mark.parametrize("kind", ["gpt2", pytest.param("llama", marks=pytest.mark.slow)])  # each compiles for ~20 s
def test_compiled_layers_equal_the_plain_model(kind):
    if not _can_compile():
        pytest.skip("torch.compile does not work here (inductor needs a C++ compiler)")
    config = RMTConfig(num_mem_tokens=3, segment_size=7)
    plain = RecurrentMemoryTransformer.wrap(no_dropout(tiny_causal_lm(kind)), config)
    fast = RecurrentMemoryTransformer.wrap(no_dropout(tiny_causal_lm(kind)), config)
    fast.load_state_dict(plain.state_dict())
    assert fast.compile_layers() is fast
    ids = random_ids(2, 23, seed=8)
    mask = torch.ones_like(ids)
    mask[1, :5] = 0
    results = []
    for model in (plain, fast):
        model.train()
        out = model(ids, attention_mask=mask, labels=ids)  # whole layers; partial segments; padding
        out.loss.backward()
        with torch.no_grad():
            state = model.eval().stream(ids.split(4, dim=1))  # the last layer on the memory rows only
        results.append((out, [p.grad for p in model.parameters()], state))
    (a, a_grads, a_stream), (b, b_grads, b_stream) = results
    close(b.logits, a.logits)
    close(b.loss, a.loss)
    close(b.memory, a.memory)
    for got, expected in zip(b_grads, a_grads):
        close(got, expected)
    close(b_stream.memory, a_stream.memory)
    close(b_stream.logits, a_stream.logits)


def test_compile_layers_is_for_decoders():
    model = RecurrentMemoryTransformer.wrap(tiny_bert(), RMTConfig(num_mem_tokens=3, segment_size=6, cls_token_id=CLS, sep_token_id=SEP))
    with pytest.raises(ValueError, match="compile_layers"):
        model.compile_layers()


def test_activation_checkpointing_with_output_logits_false_gives_the_same_gradients():
    grads = []
    for checkpointing in (False, True):
        model = _case("gpt2")
        if checkpointing:
            model.base_model.activation_checkpointing_enable()
        ids = random_ids(2, 30, seed=9)
        target = torch.full_like(ids, -100)
        target[:, -2:] = ids[:, -2:]
        model(ids, labels=target, output_logits=False).loss.backward()  # the last layer keeps a few rows, checkpointed
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    close(grads[1], grads[0])


@pytest.mark.parametrize("output_logits", [True, False])
def test_a_forward_without_any_label_has_loss_zero_and_no_gradient(output_logits):
    """Labels all -100: the mean over no token is 0 (not NaN), and backward adds nothing."""
    model = _case("gpt2")
    ids = random_ids(2, 30, seed=6)
    out = model(ids, labels=torch.full_like(ids, -100), output_logits=output_logits)
    assert out.loss.item() == 0.0
    out.loss.backward()
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())
