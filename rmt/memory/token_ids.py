"""The one check of the token ids every entry point of ``RecurrentMemoryTransformer`` takes."""

from __future__ import annotations

import torch

from rmt.errors import UsageError


def check_token_ids(input_ids, vocab_size: int, name: str = "input_ids") -> torch.Tensor:
    if not isinstance(input_ids, torch.Tensor):
        raise UsageError(f"{name} must be a torch.LongTensor, got {type(input_ids).__name__}")
    if input_ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise UsageError(f"{name} must hold integer token ids, got dtype {input_ids.dtype}")
    if input_ids.dim() == 1:
        input_ids = input_ids[None, :]
    if input_ids.dim() != 2:
        raise UsageError(f"{name} must be 1-D (tokens) or 2-D (batch, tokens), got shape {tuple(input_ids.shape)}")
    if input_ids.numel() == 0:
        raise UsageError(f"{name} is empty (shape {tuple(input_ids.shape)}); give at least one token per row")
    low, high = int(input_ids.min()), int(input_ids.max())
    if low < 0 or high >= vocab_size:
        bad = high if high >= vocab_size else low
        raise UsageError(f"token id {bad} in {name} is outside the vocabulary: allowed 0..{vocab_size - 1}")
    return input_ids.long()
