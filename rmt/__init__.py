"""rmt: the Recurrent Memory Transformer around any Hugging Face model, and the BABILong toolkit.

Public API::

    from rmt import RMTConfig, RecurrentMemoryTransformer
    from rmt.babilong import generate, load_babi, score

The names are resolved lazily so that ``rmt --help`` and the data side do not pay for importing
torch and transformers.
"""

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["RMTConfig", "RecurrentMemoryTransformer", "__version__"]

if TYPE_CHECKING:  # what the lazy names are, for type checkers and "go to definition"
    from rmt.memory import RMTConfig, RecurrentMemoryTransformer


def __getattr__(name):
    # Lazy: `import rmt` (every `rmt` command, the data side) must not import torch (~1 s of `rmt --help`).
    if name in ("RMTConfig", "RecurrentMemoryTransformer"):
        from rmt import memory

        return getattr(memory, name)
    raise AttributeError(f"module 'rmt' has no attribute {name!r}")
