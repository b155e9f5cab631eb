"""rmt.memory: the Recurrent Memory Transformer around a Hugging Face model (see docs/memory.md)."""

from rmt.memory.config import RMTConfig
from rmt.memory.recurrent import RecurrentMemoryTransformer, RMTOutput, StreamState
from rmt.memory.retrieval import RetrievalStore, SelfRetrieval

__all__ = ["RMTConfig", "RecurrentMemoryTransformer", "RMTOutput", "StreamState", "RetrievalStore", "SelfRetrieval"]
