"""Diagonal batching for ARMT inference (arXiv 2506.05229).

With ARMT, layer l of segment s needs only the output of layer l-1 of segment s and the
associative memory (A, z) of layer l after segment s-1. So every (segment s, layer l) with
s + l = t can run at step t, together::

    step t:   (s=t, l=0)  (s=t-1, l=1)  ...  (s=t-L+1, l=L-1)        n + L - 1 steps instead of n * L

At step t a contiguous range of layers [lo, hi] runs on segments t-lo, ..., t-hi as one batched call:
the layers' weights are stacked once per call (``StackedLayers``: layers first, so a range of
layers is a view) and every matmul becomes one batched matmul over the group; attention runs on
group x batch rows. The associative read and write are the same functions as in the sequential
loop (rmt.memory.associative), applied with the group as a leading dimension. Results equal the
sequential loop (fp32, atol 1e-5, tested for GPT-2, Llama, Qwen2, Qwen3, Mistral).

The layer math on stacked weights is each model family's (families.py: GPT-2; Llama, Mistral,
Qwen2, Qwen3), from the same weights, and tested equal to the HF layers. Inference only: the sequential loop
keeps training (gradients, dropout, BPTT truncation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch.nn import functional as F

from rmt.memory.adapters import DecoderLayers
from rmt.memory.associative import associative_read, associative_write

# `stream` runs diagonal batching on blocks of DIAGONAL_BLOCK * layers segments: each block pays
# L - 1 steps of ramp-up and ramp-down, so larger blocks batch better and buffer more tokens.
DIAGONAL_BLOCK = 4
# Stack the layers' weight matrices (a copy) only up to this many bytes; see StackedLayers.
MAX_STACKED_BYTES = 256 * 2**20


def armt_unsupported_reason(kind, model) -> str | None:
    """``ARMTKind.diagonal_unsupported_reason``: why ``model`` (the RecurrentMemoryTransformer around
    ``kind``) cannot run diagonally now, or None."""
    if torch.is_grad_enabled():
        return "diagonal batching is an inference schedule: run under torch.no_grad() (training uses the sequential loop)"
    if model.training:
        return "the model is in training mode (dropout); call model.eval()"
    return StackedLayers.unsupported_reason(model.base_model, model.config.segment_size + model.config.num_mem_tokens)


class StackedLayers:
    """Every decoder layer's weights stacked layers-first, and one layer's math for a group of
    consecutive layers ``lo..hi`` on a group of hidden states (G, batch, T, hidden)."""

    def __init__(self, base_model):
        self.layers = DecoderLayers(base_model)
        self.config = self.layers.config
        self.family = self.layers.family  # what differs between model families (families.py)
        blocks = list(self.layers.layers)

        # The weight matrices are copied into stacks only while that copy is small: a big model
        # keeps its own weights and multiplies layer by layer within a step (the same arithmetic;
        # at that size each matmul is large and the calls it saves would not matter anyway).
        matrices = [p for block in blocks for p in block.parameters() if p.dim() == 2]
        self.stack_matrices = sum(p.numel() * p.element_size() for p in matrices) <= MAX_STACKED_BYTES

        def stack(get):
            values = [get(block) for block in blocks]
            if values[0] is None:
                return None
            values = [v.detach() for v in values]
            return values if values[0].dim() == 2 and not self.stack_matrices else torch.stack(values)

        def get_path(path):
            def get(block):
                obj = block
                for part in path.split("."):
                    obj = getattr(obj, part, None)
                    if obj is None:
                        return None
                return obj
            return get

        names = self.family.stack(self, blocks, self.config)  # sets eps, act, heads, ... on self
        self.w = self.family.stacked_weights({key: stack(get_path(path)) for key, path in names.items()})

    @staticmethod
    def unsupported_reason(base_model, width: int) -> str | None:
        """Configurations whose layer math this module does not re-implement (they run sequentially)."""
        layers = DecoderLayers(base_model)
        return layers.family.stacked_unsupported_reason(layers, width)

    # ------------------------------------------------------------------ pieces
    def _matmul(self, x, key, lo, hi):
        """x (G, B, T, in) @ weight[lo:hi+1] (+ bias) -> (G, B, T, out): one batched matmul over the
        stacked weights, or (a big model) one matmul per layer on its own weights."""
        G, B, T, _ = x.shape
        w, b = self.w[key + "_w"], self.w.get(key + "_b")
        flat = x.reshape(G, B * T, -1)
        if isinstance(w, list):
            y = torch.stack([flat[g] @ w[lo + g] if b is None else torch.addmm(b[lo + g], flat[g], w[lo + g]) for g in range(G)])
        else:
            w = w[lo : hi + 1]
            y = torch.bmm(flat, w) if b is None else torch.baddbmm(b[lo : hi + 1, None, :], flat, w)
        return y.view(G, B, T, -1)

    def _layer_norm(self, x, key, lo, hi):
        w, b = self.w[key + "_w"][lo : hi + 1], self.w[key + "_b"][lo : hi + 1]
        return F.layer_norm(x, x.shape[-1:], eps=self.eps).mul_(w[:, None, None, :]).add_(b[:, None, None, :])

    def _rms_norm(self, x, weight):
        """LlamaRMSNorm with a weight per group item: ``weight`` (G, d) broadcast over x (G, ..., d)."""
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return weight.view(weight.shape[0], *[1] * (x.dim() - 2), weight.shape[-1]) * x32.to(dtype)

    def _activation(self, x):
        """The MLP activation. GPT-2's default ``gelu_new`` is computed in place, in the order of
        HF's NewGELUActivation (so it rounds alike): its six temporaries of the MLP's size would
        otherwise be allocated and freed at every step, which glibc answers with page faults."""
        if type(self.act).__name__ != "NewGELUActivation":
            return self.act(x)
        t = torch.pow(x, 3.0).mul_(0.044715).add_(x).mul_(math.sqrt(2.0 / math.pi)).tanh_().add_(1.0)
        return t.mul_(x).mul_(0.5)  # (1 + tanh) * x * 0.5 == 0.5 * x * (1 + tanh): scaling by 0.5 is exact

    def _attention(self, q, k, v, mask):
        """q, k, v (G*B, heads, T, head_dim); ``mask`` (G*B, 1, T, T) bool or None (causal, no padding)."""
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None, scale=self.scaling)

    # ------------------------------------------------------------------ one layer on a group
    def __call__(self, lo: int, hi: int, h: torch.Tensor, mask, rotary) -> torch.Tensor:
        """Layers lo..hi (one per group item) on ``h`` (G, B, T, hidden), which is updated in place
        and returned; ``rotary``: (cos, sin) (G*B, T, head_dim) for a rotary family. The family
        (families.py) has the layer's operations; in place and fused where it rounds alike: fewer
        large temporaries, fewer page faults."""
        return self.family.stacked_layer(self, lo, hi, h, mask, rotary)


def _causal_mask(mask2d: torch.Tensor | None, batch: int, width: int, device) -> torch.Tensor:
    """(B, 1, T, T) bool: causal, and keys that are real (``mask2d`` (B, T), None: all real)."""
    causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
    if mask2d is None:
        return causal[None, None].expand(batch, 1, width, width)
    return causal[None, None] & (mask2d[:, None, None, :] != 0)


@dataclass
class _InFlight:
    """One segment on its way through the layers."""

    hidden: torch.Tensor  # (B, T, hidden): the input of its next layer
    mask: torch.Tensor | None  # (B, 1, T, T) bool, None without padding
    rotary: tuple | None  # (cos, sin) (B, T, head_dim), Llama family
    active: torch.Tensor  # (B,) rows with tokens in this segment
    states: list  # with output_states: (A_l, z_l) after each layer's write


@torch.no_grad()
def run_armt_diagonal(kind, base_model, state, segments, logits_from, output_states=False):
    """``ARMTKind.run_diagonal``: ARMT from ``state`` (an ``ARMTState``) over ``segments``
    [(tokens (B, w), lengths (B,)), ...] on the diagonal schedule.

    Yields ``(logits or None, state or None)`` per segment, in segment order, as the sequential
    loop does (``logits_from[s]``: segment s's logits from that position on, None: none); the state is given after every
    segment with ``output_states``, else after the last one only. Segments of the same width run
    as one batched call; a narrower one (the last segment of a call can be) runs beside them.
    """
    stacked = StackedLayers(base_model)
    layers = stacked.layers
    n_layers, n_segments = len(layers), len(segments)
    m = kind.config.num_mem_tokens
    # Layers first, so a range of layers is a view; updated in place (no gradient here).
    A = state.A.transpose(0, 1).contiguous()
    z = state.z.transpose(0, 1).contiguous()
    b_gate = kind.b_gate[:, None, None]  # (layers, 1, 1, heads) against (G, batch, m, heads)

    def enter(s) -> _InFlight:
        """Segment s entering layer 0."""
        tokens, lengths = segments[s]
        embeds, mask2d, positions = kind.segment_inputs(base_model, tokens, lengths)
        hidden, context = layers.start(embeds, None, positions)  # GPT-2: + position embeddings
        batch, width = embeds.shape[:2]
        mask = None if mask2d is None else _causal_mask(mask2d, batch, width, hidden.device)
        return _InFlight(hidden, mask, context.get("position_embeddings"), lengths > 0, [])

    def run(lo, hi, items):
        """Layers lo..hi on items (one each, all of one width) as one batched call."""
        G, (batch, width, _) = hi - lo + 1, items[0].hidden.shape
        h = torch.stack([item.hidden for item in items])
        mask = None
        if any(item.mask is not None for item in items):
            mask = torch.cat([item.mask if item.mask is not None else _causal_mask(None, batch, width, h.device) for item in items])
        rotary = None if not stacked.family.rotary else tuple(torch.cat([item.rotary[i] for item in items]) for i in range(2))
        A_g, z_g = A[lo : hi + 1], z[lo : hi + 1]
        h.add_(associative_read(h, A_g, z_g, kind.w_query[lo : hi + 1], kind.heads, kind.nu))
        h = stacked(lo, hi, h, mask, rotary)
        new_A, new_z = associative_write(h[:, :, -m:], A_g, z_g, kind.w_key[lo : hi + 1], kind.w_value[lo : hi + 1],
                                         kind.w_gate[lo : hi + 1], b_gate[lo : hi + 1], kind.heads, kind.nu)
        active = torch.stack([item.active for item in items]).view(G, batch, 1, 1)
        A[lo : hi + 1] = torch.where(active[..., None], new_A, A_g)
        z[lo : hi + 1] = torch.where(active, new_z, z_g)
        for i, item in enumerate(items):
            item.hidden = h[i]
            if output_states:
                item.states.append((A[lo + i].clone(), z[lo + i].clone()))

    in_flight = {}
    for t in range(n_segments + n_layers - 1):
        lo, hi = max(0, t - n_segments + 1), min(n_layers - 1, t)
        if t < n_segments:
            in_flight[t] = enter(t)
        # Layer l takes segment t - l; consecutive layers whose segments have one width run together.
        start = lo
        for l in range(lo, hi + 1):
            if l == hi or in_flight[t - l - 1].hidden.shape[1] != in_flight[t - l].hidden.shape[1]:
                run(start, l, [in_flight[t - k] for k in range(start, l + 1)])
                start = l + 1
        if hi == n_layers - 1:  # segment t - L + 1 has left the last layer
            done = t - n_layers + 1
            item = in_flight.pop(done)
            logits = None
            if logits_from[done] is not None:
                width = segments[done][0].shape[1]
                logits = base_model.get_output_embeddings()(layers.final_norm(item.hidden[:, logits_from[done] : width]))
            out_state = None
            if output_states:
                out_state = replace(state, A=torch.stack([a for a, _ in item.states], dim=1),
                                    z=torch.stack([zz for _, zz in item.states], dim=1))
            elif done == n_segments - 1:
                out_state = replace(state, A=A.transpose(0, 1), z=z.transpose(0, 1))
            yield logits, out_state
