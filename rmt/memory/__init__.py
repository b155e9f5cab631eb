"""rmt.memory: recurrent memory (RMT, RMT-R, ARMT) around a Hugging Face model (see docs/memory.md).

The names are resolved lazily: ``rmt.memory.config`` and ``rmt.memory.options`` (the settings,
torch-free) can be imported without torch, e.g. by ``rmt train``'s flags.
"""

import importlib

_WHERE = {
    "RMTConfig": "rmt.memory.config",
    "MEMORY_KINDS": "rmt.memory.kinds", "ARMTState": "rmt.memory.kinds", "MemoryKind": "rmt.memory.kinds",
    "MemoryState": "rmt.memory.kinds", "RetrievalStore": "rmt.memory.kinds", "SelfRetrieval": "rmt.memory.kinds",
    "RecurrentMemoryTransformer": "rmt.memory.recurrent", "RMTOutput": "rmt.memory.recurrent",
    "StreamState": "rmt.memory.generation",
}
__all__ = ["RMTConfig", "RecurrentMemoryTransformer", "RMTOutput", "StreamState", "RetrievalStore", "SelfRetrieval",
           "MEMORY_KINDS", "MemoryKind", "MemoryState", "ARMTState"]


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'rmt.memory' has no attribute {name!r}")
