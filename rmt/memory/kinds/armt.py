"""ARMT, the Associative Recurrent Memory Transformer (arXiv 2407.04841).

Every decoder layer l of the base model gets an associative memory: per head a matrix ``A``
(key dim x value dim) and a normaliser ``z`` (key dim). Keys and queries go through the DPFP
feature map φ (arXiv 2102.11174, order ν) and are L2-normalised. One segment, per row::

    [ tokens (len) | padding (masked) | memory tokens (m) ]       positions 0..len-1, len..len+m-1

    before layer l, at every position:   h += A_l φ(q) / (z_l · φ(q) + eps),  q = h W_q      (read)
    after layer l, from its outputs o at the m memory positions:                             (write)
        k = φ(o W_k),  v = o W_v,  β = sigmoid(o W_β + b_β)        (one gate per head and token)
        v̄ = A_l k / (z_l · k + eps)                                 (what A_l returns for k now)
        A_l += Σ_tokens k ⊗ β (v - v̄)                              (delta rule)
        z_l += Σ_tokens γ k,   γ = clip(1 - z_l · k, 0, 1)          (the paper's correction; no gradient)

The memory tokens are learned embeddings, the same in every segment: they are how a segment
writes, and the state carried to the next segment is only ``(A, z)`` of every layer. Causal
attention keeps them out of the segment's own logits.

Invariant: ``W_v`` starts at zero, so a fresh ARMT writes ``v - v̄ = 0`` and ``A`` stays 0; with
``A = 0`` the read adds exactly 0. So a freshly wrapped ARMT equals the base model run on each
segment alone, at every length (tested); training moves ``W_v`` and the memory starts to matter.

The read and the write are ``rmt.memory.associative``'s (shared with diagonal batching, which
``run_diagonal`` hands to ``rmt.memory.diagonal``). The reference implementation keeps A and z on
its layer modules; here they are the explicit value ``ARMTState``. Works for every decoder ``DecoderLayers`` knows (GPT-2, Llama, Mistral, Qwen2/3);
encoders (BERT) are RMT/RMT-R only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from transformers import DynamicCache

from rmt.errors import UsageError
from rmt.memory.adapters import DecoderLayers
from rmt.memory.associative import associative_read, associative_write
from rmt.memory.diagonal import armt_unsupported_reason, run_armt_diagonal
from rmt.memory.kind_options import KIND_OPTIONS
from rmt.memory.kinds.base import Decoding, MemoryKind, MemoryState


@dataclass
class ARMTState(MemoryState):
    """ARMT's state, every layer's associative memory:
    ``A`` (batch, layers, heads, key_dim, value_dim) and ``z`` (batch, layers, heads, key_dim),
    key_dim = 2 * dpfp_nu * d_mem / heads, value_dim = hidden / heads. Zero before the first segment."""

    A: torch.Tensor
    z: torch.Tensor


# ---------------------------------------------------------------------- the kind
class ARMTKind(MemoryKind):
    """Associative memory in every decoder layer, written by memory tokens at the end of each segment."""

    name = "armt"
    options = KIND_OPTIONS["armt"]
    no_weight_decay = MemoryKind.no_weight_decay + ("b_gate",)  # a bias: 2-D only as it stacks one per layer

    @classmethod
    def check_config(cls, config) -> None:
        if config.num_mem_tokens == 0:
            raise UsageError("memory_kind='armt' needs num_mem_tokens >= 1 (they write the associative memory), got num_mem_tokens=0")
        if config.d_mem % config.armt_heads:
            raise UsageError(f"armt_heads={config.armt_heads} must divide d_mem={config.d_mem}")

    def __init__(self, base_model, adapter, config):
        super().__init__(base_model, adapter, config)
        n_layers = len(DecoderLayers(base_model))
        hidden, d_mem, heads = adapter.hidden_size, config.d_mem, config.armt_heads
        self.heads, self.nu, self.n_layers = heads, config.dpfp_nu, n_layers
        self.key_dim = 2 * config.dpfp_nu * d_mem // heads
        self.value_dim = hidden // heads
        embedding = base_model.get_input_embeddings().weight
        bound = 1 / math.sqrt(hidden)  # nn.Linear's default init

        def weight(*shape):
            return nn.Parameter(torch.empty(n_layers, *shape, device=embedding.device, dtype=embedding.dtype).uniform_(-bound, bound))

        # Per layer, stacked (layers first): h @ w_query[l] etc.
        self.w_query = weight(hidden, d_mem)
        self.w_key = weight(hidden, d_mem)
        self.w_value = nn.Parameter(torch.zeros(n_layers, hidden, hidden, device=embedding.device, dtype=embedding.dtype))
        self.w_gate = weight(hidden, heads)
        self.b_gate = weight(heads)

    @classmethod
    def check_supported(cls, adapter, config) -> None:
        if not adapter.is_decoder:
            raise UsageError(f"memory_kind='armt' needs a causal LM (model_type {adapter.model_type!r} is an encoder); "
                             "use memory_kind 'rmt' or 'rmt-r' for encoders")
        if adapter.hidden_size % config.armt_heads:
            raise UsageError(f"armt_heads={config.armt_heads} must divide the hidden size {adapter.hidden_size}")

    @classmethod
    def extra_positions(cls, adapter, config) -> int:
        return config.num_mem_tokens

    # ------------------------------------------------------------------ diagonal batching (inference)
    # The schedule and when it applies are diagonal.py's; these are the kind's methods themselves.
    diagonal_unsupported_reason = armt_unsupported_reason
    run_diagonal = run_armt_diagonal

    # ------------------------------------------------------------------ state
    def initial_state(self, batch: int) -> ARMTState:
        w = self.w_value
        return ARMTState(w.new_zeros(batch, self.n_layers, self.heads, self.key_dim, self.value_dim),
                         w.new_zeros(batch, self.n_layers, self.heads, self.key_dim))

    def state_from(self, memory, retrieval_store, batch: int) -> ARMTState:
        if retrieval_store is not None:
            raise UsageError("retrieval_store is for memory_kind='rmt-r'; this model's memory_kind is 'armt'")
        if memory is None:
            return self.initial_state(batch)
        expected = self.initial_state(batch)
        if (not isinstance(memory, ARMTState) or memory.A.shape != expected.A.shape or memory.z.shape != expected.z.shape):
            got = f"A {tuple(memory.A.shape)}, z {tuple(memory.z.shape)}" if isinstance(memory, ARMTState) else type(memory).__name__
            raise UsageError(f"memory must be an ARMTState with A of shape {tuple(expected.A.shape)} and z of shape "
                             f"{tuple(expected.z.shape)} (the .memory of a previous call), got {got}")
        return memory.to(device=self.w_value.device, dtype=self.w_value.dtype)

    def public(self, state: ARMTState) -> tuple:
        return state, None

    # ------------------------------------------------------------------ read and write of layer l
    def read(self, layer: int, state: ARMTState, h: torch.Tensor) -> torch.Tensor:
        return associative_read(h, state.A[:, layer], state.z[:, layer], self.w_query[layer], self.heads, self.nu)

    def write(self, layer: int, state: ARMTState, outputs: torch.Tensor):
        """Layer ``layer``'s new (A, z) from its outputs at the memory tokens (batch, m, hidden)."""
        return associative_write(outputs, state.A[:, layer], state.z[:, layer], self.w_key[layer], self.w_value[layer],
                                 self.w_gate[layer], self.b_gate[layer], self.heads, self.nu)

    # ------------------------------------------------------------------ one segment
    def segment_inputs(self, base_model, tokens: torch.Tensor, lengths: torch.Tensor):
        """``[tokens; padding; memory tokens]`` embeddings, their 2-D attention mask (None without
        padding) and position ids. A row with no tokens left is laid out as if it had one, so no
        query row of attention is fully masked; the loop discards what that row writes."""
        batch, seg_len = tokens.shape
        m = self.config.num_mem_tokens
        device = tokens.device
        lengths = lengths.clamp(min=1)
        embeds = torch.cat([base_model.get_input_embeddings()(tokens), self.memory[None].expand(batch, -1, -1)], dim=1)
        offsets = torch.arange(seg_len, device=device)[None, :].expand(batch, -1)
        positions = torch.cat([offsets, lengths[:, None] + torch.arange(m, device=device)[None, :]], dim=1)
        token_valid = offsets < lengths[:, None]
        mask = None
        if not bool(token_valid.all()):
            mask = torch.cat([token_valid, torch.ones(batch, m, dtype=torch.bool, device=device)], dim=1).long()
        return embeds, mask, positions

    def segment(self, base_model, state, tokens, lengths, logits_from=0):
        layers = DecoderLayers(base_model)
        m = self.config.num_mem_tokens
        seg_len = tokens.shape[1]
        embeds, mask, positions = self.segment_inputs(base_model, tokens, lengths)
        hidden, context = layers.start(embeds, mask, positions)
        # The last layer computes only the rows something reads: the memory tokens (they write) and
        # the token positions that need logits (DecoderLayers.run's keep_from).
        keep_from = seg_len if logits_from is None else logits_from
        new_A, new_z = [], []
        for i in range(len(layers)):
            hidden = hidden + self.read(i, state, hidden)
            hidden = layers.run(i, hidden, context, keep_from if i == len(layers) - 1 else 0)
            A, z = self.write(i, state, hidden[:, -m:])
            new_A.append(A)
            new_z.append(z)
        state = ARMTState(torch.stack(new_A, dim=1), torch.stack(new_z, dim=1))
        if logits_from is None:
            return None, state
        return base_model.get_output_embeddings()(layers.final_norm(hidden[:, : seg_len - keep_from])), state

    # ------------------------------------------------------------------ generation
    def _run_reading(self, base_model, state, embeds, mask, positions, cache):
        layers = DecoderLayers(base_model)
        hidden, context = layers.start(embeds, mask, positions, cache)
        for i in range(len(layers)):
            hidden = layers.run(i, hidden + self.read(i, state, hidden), context)
        return layers.final_norm(hidden)

    def start_decoding(self, base_model, state, tokens, lengths) -> Decoding:
        """The current segment's tokens with the state read in every layer, into a KV cache. No
        memory tokens: they come after the segment and never change its logits."""
        batch, width = tokens.shape
        device = tokens.device
        valid = torch.arange(width, device=device)[None, :] < lengths[:, None]
        positions = torch.arange(width, device=device)[None, :].expand(batch, -1)
        cache = DynamicCache(config=base_model.config)
        hidden = self._run_reading(base_model, state, base_model.get_input_embeddings()(tokens), valid.long(), positions, cache)
        last = hidden[torch.arange(batch, device=device), lengths - 1]
        return Decoding(cache, valid.long(), lengths.clone(), base_model.get_output_embeddings()(last))

    def decode_step(self, base_model, state, decoding, tokens) -> Decoding:
        mask = torch.cat([decoding.mask, torch.ones_like(decoding.mask[:, :1])], dim=1)
        hidden = self._run_reading(base_model, state, base_model.get_input_embeddings()(tokens[:, None]), mask,
                                   decoding.next_position[:, None], decoding.cache)
        return Decoding(decoding.cache, mask, decoding.next_position + 1, base_model.get_output_embeddings()(hidden[:, -1]))
