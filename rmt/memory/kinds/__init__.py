"""Memory kinds: how memory is read, written and carried (one module each; base.py has the interface).

Adding a kind = one new module with a ``MemoryKind`` subclass (its options, their checks and its
positions included) and its ``MemoryState``, its options' line in ``rmt.memory.kind_options.KIND_OPTIONS``
(torch-free: the CLI reads them) and one line in ``MEMORY_KINDS``: ``RMTConfig.memory_kind``
accepts exactly its keys, ``RMTConfig``, ``TrainConfig`` and ``rmt train`` take its options.
"""

from rmt.memory.kinds.armt import ARMTKind, ARMTState
from rmt.memory.kinds.base import Decoding, MemoryKind, MemoryState
from rmt.memory.kinds.retrieval import RetrievalStore, SelfRetrieval
from rmt.memory.kinds.rmt import RMTKind, RMTState
from rmt.memory.kinds.rmt_r import RMTRKind, RMTRState

MEMORY_KINDS: dict[str, type[MemoryKind]] = {
    "rmt": RMTKind,
    "rmt-r": RMTRKind,
    "armt": ARMTKind,
}

__all__ = ["MEMORY_KINDS", "MemoryKind", "MemoryState", "Decoding", "RMTKind", "RMTState", "RMTRKind", "RMTRState",
           "ARMTKind", "ARMTState", "RetrievalStore", "SelfRetrieval"]
