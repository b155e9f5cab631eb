"""RMT (arXiv 2207.06881, 2304.11062): memory tokens carried from the last layer of one segment to
the input of the next.

State: ``memory`` (batch, num_mem_tokens, hidden). Both functions below take a *compact* segment:
``tokens`` (batch, L) with each row's real tokens first and padding after them (``lengths``
(batch,) says how many are real; 0 means the row has no tokens left).

Decoder layout, per row::

    [ read memory (m) | tokens (len) | padding (L - len, masked) | write memory (m) ]
      positions 0..m-1   m..m+len-1                               m+len..2m+len-1

Position ids restart at 0 in every segment and skip the padding, so a padded row sees exactly what
it would see alone (the padding is masked out of attention). Causal attention lets every token read
the memory, and the write positions read the whole segment.

Encoder layout, per row::

    [CLS] memory (m) [SEP] tokens (len) [SEP] padding
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from rmt.errors import UsageError
from rmt.memory.adapters import DecoderLayers, inner_model
from rmt.memory.kind_options import KIND_OPTIONS
from rmt.memory.kinds.base import Decoding, MemoryKind, MemoryState



@dataclass
class RMTState(MemoryState):
    """RMT's state: the memory tokens the next segment reads, (batch, num_mem_tokens, hidden).
    ``write_rate`` (gated writes only, else None): per row, the mean probability of the gates that
    made this memory (what the sparsity pressure lowers; a diagnostic of how much gets rewritten)."""

    memory: torch.Tensor
    write_rate: torch.Tensor | None = field(default=None, kw_only=True)


def _attention_mask(valid: torch.Tensor) -> torch.Tensor | None:
    # No padding at all: let the model use its fast unmasked (is_causal) path.
    return None if bool(valid.all()) else valid.long()


def decoder_segment(base_model, memory: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor, logits_from: int | None = 0):
    """Run ``[memory; tokens; memory]`` and return (logits (B, L - logits_from, V) of the token
    positions ``logits_from:``, or None when ``logits_from`` is None; hidden at the write positions (B, m, H)).

    The written hidden is the *final-normed* last hidden state at the write positions (what HF calls
    ``last_hidden_state``): the norm bounds its scale, so it cannot drift over thousands of
    recurrent steps, and each layer's own pre-norm rescales it on the next read anyway
    (docs/memory.md, "Which hidden state becomes memory").

    When not every token's logits are wanted, the last layer computes only the rows something
    reads: the write positions and the token positions that need logits (``DecoderLayers.run``'s
    ``keep_from``; row by row the same arithmetic as the whole layer). A segment of a stream needs
    no logits, so its last layer runs its MLP on the ``m`` write rows alone.
    """
    batch, seg_len = tokens.shape
    m = memory.shape[1]
    if m == 0 and logits_from is None:
        return None, memory  # no memory and no logits wanted: nothing of this segment is read
    device = tokens.device
    token_embeds = base_model.get_input_embeddings()(tokens)
    inputs_embeds = torch.cat([memory, token_embeds, memory], dim=1) if m else token_embeds

    offsets = torch.arange(seg_len, device=device)
    token_valid = offsets[None, :] < lengths[:, None]  # (B, L)
    mem_valid = torch.ones(batch, m, dtype=torch.bool, device=device)
    valid = torch.cat([mem_valid, token_valid, mem_valid], dim=1)

    token_pos = (m + offsets)[None, :].expand(batch, -1)
    write_pos = m + lengths[:, None] + torch.arange(m, device=device)[None, :]
    read_pos = torch.arange(m, device=device)[None, :].expand(batch, -1)
    position_ids = torch.cat([read_pos, token_pos, write_pos], dim=1)

    layers = DecoderLayers(base_model)
    hidden, context = layers.start(inputs_embeds, _attention_mask(valid), position_ids)
    # Every token's logits wanted: the whole last layer (the read rows it would skip are few, and
    # their zero gradients take part in the weight gradients' sums: skipping them changes rounding).
    keep_from = 0 if logits_from == 0 else m + (seg_len if logits_from is None else logits_from)
    for i in range(len(layers)):
        hidden = layers.run(i, hidden, context, keep_from if i == len(layers) - 1 else 0)
    hidden = layers.final_norm(hidden)  # rows keep_from.. of [memory; tokens; memory]
    logits = None
    if logits_from is not None:
        logits = base_model.get_output_embeddings()(hidden[:, m + logits_from - keep_from : m + seg_len - keep_from])
    return logits, hidden[:, hidden.shape[1] - m :]


def encoder_segment(base_model, memory: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor, cls_id: int, sep_id: int, pad_id: int):
    """Run ``[CLS] memory [SEP] tokens [SEP]`` and return (classifier logits (B, C), hidden at the memory positions (B, m, H))."""
    batch, seg_len = tokens.shape
    m = memory.shape[1]
    device = tokens.device
    total = 1 + m + 1 + seg_len + 1
    arange = torch.arange(seg_len + 1, device=device)
    # tokens followed by [SEP] right after each row's last real token, then padding
    body = torch.full((batch, seg_len + 1), pad_id, dtype=tokens.dtype, device=device)
    body[:, :seg_len] = torch.where(arange[None, :seg_len] < lengths[:, None], tokens, pad_id)
    body.scatter_(1, lengths[:, None], sep_id)
    head = torch.full((batch, 1 + m + 1), pad_id, dtype=tokens.dtype, device=device)
    head[:, 0] = cls_id
    head[:, m + 1] = sep_id
    ids = torch.cat([head, body], dim=1)
    embeds = base_model.get_input_embeddings()(ids)
    if m:
        embeds = torch.cat([embeds[:, :1], memory, embeds[:, 1 + m :]], dim=1)
    valid = torch.cat([torch.ones(batch, 2 + m, dtype=torch.bool, device=device), arange[None, :] <= lengths[:, None]], dim=1)
    out = base_model(
        inputs_embeds=embeds,
        attention_mask=valid.long(),
        token_type_ids=torch.zeros(batch, total, dtype=torch.long, device=device),
        position_ids=torch.arange(total, device=device)[None, :].expand(batch, -1),
        output_hidden_states=True,
    )
    return out.logits, out.hidden_states[-1][:, 1 : 1 + m]


class RMTKind(MemoryKind):
    """Memory tokens: read at the start of a segment, written at its end (decoders and encoders)."""

    name = "rmt"
    options = KIND_OPTIONS["rmt"]

    def __init__(self, base_model, adapter, config):
        super().__init__(base_model, adapter, config)
        if not adapter.is_decoder:
            base_cfg = base_model.config
            self.cls_token_id = config.cls_token_id if config.cls_token_id is not None else getattr(base_cfg, "cls_token_id", None)
            self.sep_token_id = config.sep_token_id if config.sep_token_id is not None else getattr(base_cfg, "sep_token_id", None)
            if self.cls_token_id is None or self.sep_token_id is None:
                raise UsageError("encoder models need cls_token_id and sep_token_id: set them in RMTConfig (e.g. 101 and 102 for bert-base)")
            for name, value in (("cls_token_id", self.cls_token_id), ("sep_token_id", self.sep_token_id)):
                if not 0 <= value < adapter.vocab_size:
                    raise UsageError(f"{name}={value} is outside the vocabulary: allowed 0..{adapter.vocab_size - 1}")
            self.pad_token_id = getattr(base_cfg, "pad_token_id", None) or 0
        self.write_gate = None
        if config.memory_write == "gated":
            hidden = adapter.hidden_size
            embedding = base_model.get_input_embeddings().weight
            self.write_gate = nn.Linear(2 * hidden, hidden).to(device=embedding.device, dtype=embedding.dtype)
            # Every gate starts with the same logit (write_gate_bias > 0: all open, exactly "replace").
            nn.init.zeros_(self.write_gate.weight)
            nn.init.constant_(self.write_gate.bias, config.write_gate_bias)

    @classmethod
    def extra_positions(cls, adapter, config) -> int:
        m = config.num_mem_tokens
        return 2 * m if adapter.is_decoder else m + 3

    def write_rate(self, state):
        return state.write_rate  # gated writes (``write``); None for "replace"

    def extra_loss(self, write_rate):
        # Gated writes: the pressure that shuts the gates the task does not need (``write``).
        if write_rate is None or not self.config.write_sparsity:
            return None
        return self.config.write_sparsity * write_rate

    # ------------------------------------------------------------------ state
    def initial_state(self, batch: int) -> RMTState:
        return RMTState(self.memory[None].expand(batch, -1, -1))

    def _check_memory(self, memory, batch: int) -> torch.Tensor:
        expected = (batch, self.config.num_mem_tokens, self.adapter.hidden_size)
        if not isinstance(memory, torch.Tensor) or tuple(memory.shape) != expected:
            got = tuple(memory.shape) if isinstance(memory, torch.Tensor) else type(memory).__name__
            raise UsageError(f"memory must be a tensor of shape {expected}, got {got}")
        return memory.to(device=self.memory.device, dtype=self.memory.dtype)

    def state_from(self, memory, retrieval_store, batch: int) -> RMTState:
        if retrieval_store is not None:
            raise UsageError(f"retrieval_store is for memory_kind='rmt-r'; this model's memory_kind is {self.name!r}")
        return self.initial_state(batch) if memory is None else RMTState(self._check_memory(memory, batch))

    def public(self, state: RMTState) -> tuple:
        return state.memory, None

    # ------------------------------------------------------------------ read and write
    def read(self, state: RMTState) -> torch.Tensor:
        """The memory tokens this segment reads."""
        return state.memory

    def write(self, state: RMTState, written: torch.Tensor, lengths: torch.Tensor) -> RMTState:
        """The write rule (``config.memory_write``); ``written`` (batch, m, hidden) is the hidden state
        at the write positions and ``state`` the memory before this segment.

        ``"replace"``: the next memory is ``written``. ``"gated"``: each value of the memory is
        either replaced by the written one or kept *exactly*, by a 0/1 gate computed from the old and
        the written memory (logit = Linear([old; written])). The forward pass uses the hard gate
        (logit > 0), so a segment that opens no gate leaves the memory bit for bit as it was: nothing
        drifts over background, at any length. Gradients flow as if the gate were its sigmoid
        probability (a straight-through estimator), which never saturates, so a shut gate can learn
        to open again. The mean probability is returned as ``write_rate``; training adds
        ``write_sparsity * write_rate`` to the loss, which shuts the gates the task does not need.
        """
        if self.write_gate is None:
            return RMTState(written)
        old = state.memory
        logit = self.write_gate(torch.cat([old.expand_as(written), written], dim=-1))
        probability = torch.sigmoid(logit)
        # Value: exactly `written` where the gate is open, exactly `old` where it is shut (the second
        # term is 0); gradient: d memory / d probability = written - old.
        memory = torch.where(logit > 0, written, old) + (probability - probability.detach()) * (written - old)
        return RMTState(memory, write_rate=probability.mean(dim=(1, 2)))

    def segment(self, base_model, state, tokens, lengths, logits_from=0):
        read = self.read(state)
        if self.adapter.is_decoder:
            logits, written = decoder_segment(base_model, read, tokens, lengths, logits_from)
        else:
            logits, written = encoder_segment(base_model, read, tokens, lengths, self.cls_token_id, self.sep_token_id, self.pad_token_id)
        return logits, self.write(state, written, lengths)

    # ------------------------------------------------------------------ generation
    def start_decoding(self, base_model, state, tokens, lengths) -> Decoding:
        """``[read memory; current tokens; padding]`` through the base model with a KV cache."""
        read = self.read(state)
        batch, width = tokens.shape
        m = read.shape[1]
        device = tokens.device
        valid = torch.cat([torch.ones(batch, m, dtype=torch.bool, device=device),
                           torch.arange(width, device=device)[None, :] < lengths[:, None]], dim=1)
        positions = torch.arange(m + width, device=device)[None, :].expand(batch, -1)
        embeds = base_model.get_input_embeddings()(tokens)
        out = inner_model(base_model)(inputs_embeds=torch.cat([read, embeds], dim=1), attention_mask=valid.long(),
                                      position_ids=positions, use_cache=True)
        last = out.last_hidden_state[torch.arange(batch, device=device), m + lengths - 1]
        return Decoding(out.past_key_values, valid.long(), m + lengths, base_model.get_output_embeddings()(last))

    def decode_step(self, base_model, state, decoding, tokens) -> Decoding:
        mask = torch.cat([decoding.mask, torch.ones_like(decoding.mask[:, :1])], dim=1)
        out = inner_model(base_model)(inputs_embeds=base_model.get_input_embeddings()(tokens[:, None]), attention_mask=mask,
                                      position_ids=decoding.next_position[:, None], past_key_values=decoding.cache, use_cache=True)
        logits = base_model.get_output_embeddings()(out.last_hidden_state[:, -1])
        return Decoding(out.past_key_values, mask, decoding.next_position + 1, logits)
