"""RMT-R self-retrieval (arXiv 2402.10790): the memory cross-attends to all memory states written so far.

Before each segment the current memory M (queries) attends to the store S of every memory state
written by earlier segments (keys and values):

    M' = M  + CrossAttention(LN(M), LN(S))
    M''= M' + MLP(LN(M'))

The output projections of the attention and of the MLP start at zero, so a freshly built block is
the identity: at initialisation RMT-R gives exactly the plain RMT result, and training moves it
away from that. On the first segment the store is empty and the block is skipped.

The store grows by ``num_mem_tokens`` vectors per segment (memory cost O(segments), attention cost
O(segments) per segment): it is the one part of RMT-R whose memory is not constant in the input length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rmt.errors import UsageError


@dataclass
class RetrievalStore:
    """All memory states written so far, per row: ``states`` (batch, n, hidden) and ``mask`` (batch, n),
    True where a stored vector is real (rows that finished early stop adding real vectors)."""

    states: torch.Tensor
    mask: torch.Tensor

    @classmethod
    def empty(cls, batch: int, hidden: int, device, dtype) -> "RetrievalStore":
        return cls(
            torch.zeros(batch, 0, hidden, device=device, dtype=dtype),
            torch.zeros(batch, 0, dtype=torch.bool, device=device),
        )

    def append(self, memory: torch.Tensor, active: torch.Tensor) -> "RetrievalStore":
        """A new store with ``memory`` (batch, m, hidden) added; rows where ``active`` is False get masked entries."""
        m = memory.shape[1]
        new_mask = active[:, None].expand(-1, m)
        return RetrievalStore(torch.cat([self.states, memory], dim=1), torch.cat([self.mask, new_mask], dim=1))

    def detach(self) -> "RetrievalStore":
        return RetrievalStore(self.states.detach(), self.mask)

    def __len__(self) -> int:
        return self.states.shape[1]


class SelfRetrieval(nn.Module):
    """Pre-norm cross-attention from the memory to the store, then an MLP, both residual."""

    def __init__(self, hidden_size: int, num_heads: int = 1, eps: float = 1e-5):
        super().__init__()
        if hidden_size % num_heads:
            raise UsageError(f"retrieval_heads={num_heads} must divide the hidden size {hidden_size}")
        self.query_norm = nn.LayerNorm(hidden_size, eps=eps)
        self.store_norm = nn.LayerNorm(hidden_size, eps=eps)
        self.attention = nn.MultiheadAttention(hidden_size, num_heads, batch_first=True)
        self.mlp_norm = nn.LayerNorm(hidden_size, eps=eps)
        self.mlp = nn.Sequential(
            nn.Linear(hidden_size, 4 * hidden_size), nn.GELU(), nn.Linear(4 * hidden_size, hidden_size)
        )
        # Zero output projections: the block starts as the identity (see module docstring).
        nn.init.zeros_(self.attention.out_proj.weight)
        nn.init.zeros_(self.attention.out_proj.bias)
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, memory: torch.Tensor, store: RetrievalStore) -> torch.Tensor:
        if len(store) == 0:
            return memory
        keys = self.store_norm(store.states)
        # A row with no real stored vector (a row of a batch that has not finished a segment yet)
        # must get exactly what an empty store gives: the block skipped. Let it attend to its masked
        # entries (to avoid NaN) and keep its memory unchanged below.
        has_any = store.mask.any(dim=1)
        key_padding_mask = ~(store.mask | ~has_any[:, None])
        retrieved, _ = self.attention(self.query_norm(memory), keys, keys, key_padding_mask=key_padding_mask, need_weights=False)
        updated = memory + retrieved
        updated = updated + self.mlp(self.mlp_norm(updated))
        return torch.where(has_any[:, None, None], updated, memory)
