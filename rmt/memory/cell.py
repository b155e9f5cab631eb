"""One segment through the base model: memory in, (outputs, memory) out. No state is kept here.

Both functions take a *compact* segment: ``tokens`` (batch, L) with each row's real tokens first and
padding after them (``lengths`` (batch,) says how many are real; 0 means the row has no tokens left).

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

import torch

from rmt.memory.adapters import inner_model


def _attention_mask(valid: torch.Tensor) -> torch.Tensor | None:
    # No padding at all: let the model use its fast unmasked (is_causal) path.
    return None if bool(valid.all()) else valid.long()


def decoder_segment(base_model, memory: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor):
    """Run ``[memory; tokens; memory]`` and return (logits (B, L, V), new memory (B, m, H)).

    The new memory is the *final-normed* last hidden state at the write positions (what HF calls
    ``last_hidden_state``): the norm bounds its scale, so it cannot drift over thousands of
    recurrent steps, and each layer's own pre-norm rescales it on the next read anyway
    (docs/memory.md, "Which hidden state becomes memory").
    """
    batch, seg_len = tokens.shape
    m = memory.shape[1]
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

    hidden = inner_model(base_model)(
        inputs_embeds=inputs_embeds,
        attention_mask=_attention_mask(valid),
        position_ids=position_ids,
        use_cache=False,
    ).last_hidden_state
    logits = base_model.get_output_embeddings()(hidden[:, m : m + seg_len])
    new_memory = hidden[:, m + seg_len :]
    return logits, new_memory


def encoder_segment(base_model, memory: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor, cls_id: int, sep_id: int, pad_id: int):
    """Run ``[CLS] memory [SEP] tokens [SEP]`` and return (classifier logits (B, C), new memory (B, m, H))."""
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
    new_memory = out.hidden_states[-1][:, 1 : 1 + m]
    return out.logits, new_memory
