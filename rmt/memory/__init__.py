"""rmt.memory: recurrent memory (RMT, RMT-R, ARMT) around a Hugging Face model (see docs/memory.md)."""

from rmt.memory.config import RMTConfig
from rmt.memory.kinds import MEMORY_KINDS, ARMTState, MemoryKind, MemoryState, RetrievalStore, SelfRetrieval
from rmt.memory.recurrent import RecurrentMemoryTransformer, RMTOutput, StreamState

__all__ = ["RMTConfig", "RecurrentMemoryTransformer", "RMTOutput", "StreamState", "RetrievalStore", "SelfRetrieval",
           "MEMORY_KINDS", "MemoryKind", "MemoryState", "ARMTState"]
