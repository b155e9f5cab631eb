"""The MemoryKind interface: how one kind of memory is read, written and carried.

``RecurrentMemoryTransformer`` (recurrent.py) owns the one segment loop (segmenting, padding,
truncated BPTT, streaming, generation, save/load). A memory kind is a small ``nn.Module`` that owns
its parameters and answers the loop's questions:

* ``initial_state(batch)``: the state before the first segment;
* ``segment(base_model, state, tokens, lengths) -> (logits, state)``: one segment through the base
  model with the state read in, and the state it writes;
* ``start_decoding`` / ``decode_step``: generation inside the current segment (prefill with the state
  read in, then one token at a time with a KV cache);
* ``state_from`` / ``public``: the caller's ``memory=`` / ``retrieval_store=`` values to a state and back.

It also owns its settings: ``options`` (each an ``Option``: name, default, meaning; declared
torch-free in ``rmt.memory.kind_options.KIND_OPTIONS``; ``RMTConfig``
accepts and validates them, ``rmt train`` has a flag for each), ``check_config`` (checks across
settings), ``extra_positions`` (what a segment pass adds to its tokens) and, optionally, a
faster inference schedule (``diagonal_unsupported_reason`` / ``run_diagonal``: ARMT's).

The state is a value (a ``MemoryState`` dataclass of tensors, batch first) that the loop passes in
and gets back; a kind never keeps it between calls. The loop only uses the state's generic
operations: ``where`` (keep the rows that had no tokens in a segment), ``detach`` (truncated BPTT)
and ``to``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import nn

from rmt.memory.options import Option  # noqa: F401  (a kind's settings; kinds import it from here)


@dataclass
class MemoryState:
    """Base class of each kind's state: a dataclass whose fields are tensors with the batch first."""

    def _map(self, fn) -> "MemoryState":
        # Optional fields (None) stay None.
        return replace(self, **{f.name: None if getattr(self, f.name) is None else fn(getattr(self, f.name))
                                for f in fields(self)})

    def where(self, active: torch.Tensor, previous: "MemoryState") -> "MemoryState":
        """This state for rows where ``active`` (batch,) is True, ``previous`` for the others."""
        def pick(name):
            new, old = getattr(self, name), getattr(previous, name)
            if new is None or old is None:
                return new
            return torch.where(active.view(-1, *[1] * (new.dim() - 1)), new, old)

        return replace(self, **{f.name: pick(f.name) for f in fields(self)})

    def detach(self) -> "MemoryState":
        return self._map(lambda t: t.detach())

    def to(self, device=None, dtype=None) -> "MemoryState":
        return self._map(lambda t: t.to(device=device, dtype=dtype if t.is_floating_point() else None))

    @property
    def batch_size(self) -> int:
        return getattr(self, fields(self)[0].name).shape[0]


@dataclass
class Decoding:
    """Generation inside one segment: the KV cache of the current segment (and whatever the kind
    reads before it), which cached positions are real, the next token's position id per row, and
    the next-token logits (batch, vocab)."""

    cache: object
    mask: torch.Tensor
    next_position: torch.Tensor
    logits: torch.Tensor


class MemoryKind(nn.Module):
    """Interface of a memory kind (see the module docstring). Subclasses set ``name`` and implement
    the methods below; ``memory`` (num_mem_tokens, hidden) is the learned memory every kind uses."""

    name: str = ""
    # This kind's own settings (``Option``s): ``KIND_OPTIONS[name]`` (rmt/memory/kind_options.py, torch-free).
    options: tuple = ()
    # This kind's parameters (names inside the kind) that weight decay leaves alone although they are
    # matrices: the memory tokens are state, not weights. A subclass extends its parent's.
    no_weight_decay: tuple = ("memory",)

    def __init__(self, base_model: nn.Module, adapter, config):
        super().__init__()
        self.adapter = adapter
        self.config = config
        m, hidden = config.num_mem_tokens, adapter.hidden_size
        embedding = base_model.get_input_embeddings().weight
        # Memory starts at the scale of the input embeddings, so the first read looks like ordinary tokens.
        scale = float(embedding.detach().float().std()) if embedding.numel() > 1 else 0.02
        self.memory = nn.Parameter(
            torch.randn(m, hidden, device=embedding.device, dtype=torch.float32).mul_(scale).to(embedding.dtype)
        )

    @classmethod
    def check_config(cls, config) -> None:
        """Raise ValueError when ``config`` (an ``RMTConfig`` of this kind, every option already
        checked on its own) does not make sense for this kind: checks across settings."""

    @classmethod
    def check_supported(cls, adapter, config) -> None:
        """Raise ValueError when this kind cannot wrap the model ``adapter`` describes with ``config``."""

    @classmethod
    def extra_positions(cls, adapter, config) -> int:
        """Position ids one segment pass uses beyond its ``segment_size`` tokens (checked against
        learned position tables)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ faster schedules
    def diagonal_unsupported_reason(self, model) -> str | None:
        """Why ``model`` (the ``RecurrentMemoryTransformer`` around this kind) cannot run its
        segments on a diagonal schedule now (``run_diagonal``), or None when it can."""
        from rmt.memory.kinds import MEMORY_KINDS  # here: the registry imports this module

        able = [name for name, kind in MEMORY_KINDS.items() if kind.run_diagonal is not MemoryKind.run_diagonal]
        return f"diagonal batching is for memory_kind={' or '.join(map(repr, able))} (this model is {self.name!r})"

    def run_diagonal(self, base_model, state, segments, logits_from, output_states=False):
        """The segments on the diagonal schedule: yields ``(logits or None, state or None)`` per
        segment, as the sequential loop does (see rmt.memory.diagonal)."""
        raise NotImplementedError

    def write_rate(self, state: MemoryState) -> torch.Tensor | None:
        """Per row (batch,), how much of the memory the segment that wrote ``state`` rewrote, for
        ``extra_loss`` (the loop averages it over the rows and segments that had tokens); None:
        this kind's writes are not measured (every kind but gated RMT / RMT-R)."""
        return None

    def extra_loss(self, write_rate: torch.Tensor | None):
        """What training adds to the loss, given the mean ``write_rate`` of the states (None: none)."""
        return None

    # ------------------------------------------------------------------ state
    def initial_state(self, batch: int) -> MemoryState:
        raise NotImplementedError

    def state_from(self, memory, retrieval_store, batch: int) -> MemoryState:
        """The state for the caller's ``memory=`` / ``retrieval_store=`` (None: the initial state);
        ValueError when they do not fit this kind and batch."""
        raise NotImplementedError

    def public(self, state: MemoryState) -> tuple:
        """``(memory, retrieval_store)`` as ``RMTOutput`` and ``StreamState`` show them."""
        raise NotImplementedError

    # ------------------------------------------------------------------ one segment
    def segment(self, base_model, state: MemoryState, tokens: torch.Tensor, lengths: torch.Tensor, logits_from: int | None = 0):
        """Run one compact segment (``tokens`` (batch, L), row i's ``lengths[i]`` real tokens first;
        0 means the row has no tokens left) and return ``(logits, written state)``. Decoders: logits
        of the token positions ``logits_from:`` (batch, L - logits_from, vocab), or None when
        ``logits_from`` is None (the loop needs no logits of this segment: computing none of them,
        and nothing only they need, is where streaming and training save time); encoders:
        (batch, num_labels), always. The loop keeps the old state for rows with no tokens
        (``MemoryState.where``), so their written state may be anything finite."""
        raise NotImplementedError

    # ------------------------------------------------------------------ generation
    def start_decoding(self, base_model, state: MemoryState, tokens: torch.Tensor, lengths: torch.Tensor) -> Decoding:
        """Prefill the current (partial) segment ``tokens`` (batch, W) with ``lengths`` real tokens per
        row (right-padded), reading ``state``; the logits are those after each row's last token."""
        raise NotImplementedError

    def decode_step(self, base_model, state: MemoryState, decoding: Decoding, tokens: torch.Tensor) -> Decoding:
        """Append one token per row (``tokens`` (batch,)) to the current segments; return the updated decoding."""
        raise NotImplementedError
