"""RMT-R (arXiv 2402.10790): RMT whose memory, before each segment, retrieves from every memory
state written so far (the block and its store are in retrieval.py).

State: ``memory`` (batch, m, hidden) as in RMT, plus the ``store`` of all written memory states; it
grows by ``num_mem_tokens`` vectors per segment.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rmt.errors import UsageError
from rmt.memory.kind_options import KIND_OPTIONS
from rmt.memory.kinds.retrieval import RetrievalStore, SelfRetrieval
from rmt.memory.kinds.rmt import RMTKind, RMTState


@dataclass
class RMTRState(RMTState):
    """RMT's memory plus the store of every memory state written so far."""

    store: RetrievalStore

    def where(self, active, previous):
        # The store is append-only: a row without tokens in this segment already got masked
        # entries when the segment appended (RMTRKind.write), so only the memory is chosen per row.
        rate = self.write_rate
        if rate is not None and previous.write_rate is not None:
            rate = torch.where(active, rate, previous.write_rate)
        return RMTRState(torch.where(active[:, None, None], self.memory, previous.memory), self.store, write_rate=rate)

    def detach(self):
        rate = None if self.write_rate is None else self.write_rate.detach()
        return RMTRState(self.memory.detach(), self.store.detach(), write_rate=rate)

    def to(self, device=None, dtype=None):
        store = RetrievalStore(self.store.states.to(device=device, dtype=dtype), self.store.mask.to(device=device))
        rate = None if self.write_rate is None else self.write_rate.to(device=device, dtype=dtype)
        return RMTRState(self.memory.to(device=device, dtype=dtype), store, write_rate=rate)


class RMTRKind(RMTKind):
    """RMT plus self-retrieval: the memory read by a segment has first attended to the store."""

    name = "rmt-r"
    options = KIND_OPTIONS["rmt-r"]

    @classmethod
    def check_config(cls, config) -> None:
        if config.num_mem_tokens == 0:
            raise UsageError("memory_kind='rmt-r' (self_retrieval=True) needs num_mem_tokens >= 1, got num_mem_tokens=0")

    def __init__(self, base_model, adapter, config):
        super().__init__(base_model, adapter, config)
        embedding = base_model.get_input_embeddings().weight
        self.retrieval = SelfRetrieval(adapter.hidden_size, config.retrieval_heads).to(device=embedding.device, dtype=embedding.dtype)

    def initial_state(self, batch: int) -> RMTRState:
        memory = super().initial_state(batch).memory
        return RMTRState(memory, RetrievalStore.empty(batch, self.adapter.hidden_size, memory.device, memory.dtype))

    def state_from(self, memory, retrieval_store, batch: int) -> RMTRState:
        initial = self.initial_state(batch)
        memory = initial.memory if memory is None else self._check_memory(memory, batch)
        if retrieval_store is None:
            return RMTRState(memory, initial.store)
        if not isinstance(retrieval_store, RetrievalStore) or retrieval_store.states.shape[0] != batch:
            raise UsageError(f"retrieval_store must be the RetrievalStore of a previous call with batch size {batch}, "
                             f"got {type(retrieval_store).__name__}")
        return RMTRState(memory, retrieval_store)

    def public(self, state: RMTRState) -> tuple:
        return state.memory, state.store

    def read(self, state: RMTRState) -> torch.Tensor:
        return self.retrieval(state.memory, state.store)

    def write(self, state: RMTRState, written: torch.Tensor, lengths: torch.Tensor) -> RMTRState:
        """RMT's write rule; the written memory also joins the store (masked for rows without tokens)."""
        new = super().write(state, written, lengths)
        return RMTRState(new.memory, state.store.append(new.memory, lengths > 0), write_rate=new.write_rate)
