"""The memory kinds' own options, declared torch-free: ``KIND_OPTIONS`` (kind name -> its ``Option``s).

The one definition: each kind class in rmt/memory/kinds/ reads its ``options`` from here, and
``RMTConfig``, ``TrainConfig`` and ``rmt train``'s flags read them without importing the kinds
(which import torch). Adding a kind = its line here and its line in ``rmt.memory.kinds.MEMORY_KINDS``
(the same keys, in the same order; a test checks).
"""

from __future__ import annotations

from rmt.memory.options import Option

MEMORY_WRITES = ("replace", "gated")  # the write rules of RMTKind.write

RMT_OPTIONS = (
    Option("memory_write", "replace", str, choices=MEMORY_WRITES, exclusive="a write rule",
           help="RMT/RMT-R write rule: replace (the papers' RMT) or gated (0/1 gates trained to stay shut)."),
    Option("write_gate_bias", 1.0, float, help="Gated writes: initial gate logit (> 0: all gates open, i.e. replace)."),
    Option("write_sparsity", 0.05, float, minimum=0, help="Gated writes: weight of the mean gate-open probability in the loss."),
)

KIND_OPTIONS: dict[str, tuple[Option, ...]] = {
    "rmt": RMT_OPTIONS,
    "rmt-r": RMT_OPTIONS + (  # RMT's, plus the self-retrieval's
        Option("retrieval_heads", 1, int, minimum=1, help="RMT-R: attention heads of the self-retrieval (must divide the hidden size)."),
    ),
    "armt": (
        Option("d_mem", 64, int, minimum=1, help="ARMT: size of each layer's key/query projection, before the DPFP feature map."),
        Option("dpfp_nu", 3, int, minimum=1, help="ARMT: order of the DPFP feature map (the paper uses 3)."),
        Option("armt_heads", 1, int, minimum=1, help="ARMT: associative memories per layer (must divide d_mem and the hidden size)."),
    ),
}
