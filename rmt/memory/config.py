"""RMTConfig: the recurrent-memory settings, validated on construction and saved as JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

from rmt.errors import UsageError


MEMORY_WRITES = ("replace", "gated")  # RMT / RMT-R write rules (kinds/rmt.py, RMTKind.write)


def check_memory_write(memory_kind: str, memory_write: str, write_gate_bias, write_sparsity) -> tuple[float, float]:
    """The write-rule settings checked (one ``ValueError`` line naming the bad value), the two
    numbers as floats. Shared by ``RMTConfig`` and ``rmt train``'s ``TrainConfig``."""
    if memory_write not in MEMORY_WRITES:
        raise UsageError(f"unknown memory_write {memory_write!r}; allowed: {', '.join(MEMORY_WRITES)}")
    if memory_write != "replace" and memory_kind not in ("rmt", "rmt-r"):
        raise UsageError(f"memory_write={memory_write!r} is a write rule of memory_kind 'rmt' and 'rmt-r'; "
                         f"memory_kind={memory_kind!r} writes with its own rule: use memory_write='replace'")
    numbers = []
    for name, value in (("write_gate_bias", write_gate_bias), ("write_sparsity", write_sparsity)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or abs(value) == float("inf"):
            raise UsageError(f"{name} must be a finite number, got {value!r}")
        numbers.append(float(value))
    if numbers[1] < 0:
        raise UsageError(f"write_sparsity must be >= 0, got {numbers[1]!r}")
    return numbers[0], numbers[1]


def memory_kind_names() -> tuple[str, ...]:
    """The allowed ``memory_kind`` values: the keys of the registry ``rmt.memory.kinds.MEMORY_KINDS``."""
    from rmt.memory.kinds import MEMORY_KINDS

    return tuple(MEMORY_KINDS)


@dataclass
class RMTConfig:
    """Settings of the recurrent memory wrapped around a base model.

    Args:
        memory_kind: how memory is read, written and carried (docs/memory.md):
            ``"rmt"`` memory tokens carried from the last layer of a segment to the first of the next;
            ``"rmt-r"`` the same plus self-retrieval from all earlier memory states (arXiv 2402.10790);
            ``"armt"`` an associative matrix per layer written by memory tokens (arXiv 2407.04841).
        num_mem_tokens: learned memory vectors. RMT/RMT-R: read at the start of each segment and
            written at its end (0 turns the wrapper into plain segment-by-segment processing).
            ARMT: appended at the end of every segment (``[segment; memory]``); their outputs at every
            layer write that layer's associative memory (ARMT needs at least 1).
        segment_size: input tokens per segment; memory (and, for encoders, [CLS]/[SEP]) come on top.
        bptt_depth: how many of the last segments of a forward call stay in the gradient path through
            memory; -1 keeps all of them (full backpropagation through time).
        memory_write: RMT/RMT-R write rule (docs/memory.md, "Gated writes"): ``"replace"`` (the
            papers' RMT: the next memory is the hidden state at the write positions) or ``"gated"``
            (each memory value is either replaced by the written one or kept exactly, by a learned
            0/1 gate trained to stay shut: memory that is not rewritten cannot drift, however long
            the input).
        write_gate_bias: ``"gated"``: the gates' initial logit; > 0 starts every gate open, i.e.
            exactly ``"replace"``, and training shuts the gates it does not need.
        write_sparsity: ``"gated"``: weight of the mean gate-open probability added to the training
            loss (what shuts unneeded gates); 0 turns the pressure off.
        self_retrieval: the v0.1 spelling of ``memory_kind="rmt-r"`` (still accepted; kept equal to
            ``memory_kind == "rmt-r"``; not written to new checkpoints).
        retrieval_heads: RMT-R: attention heads of the cross-attention (must divide the hidden size).
        d_mem: ARMT: size of the key/query projection of each layer, before the DPFP feature map.
        dpfp_nu: ARMT: order of the DPFP feature map (arXiv 2102.11174); keys have 2 * dpfp_nu *
            d_mem / armt_heads dimensions per head. The paper uses 3.
        armt_heads: ARMT: independent associative memories per layer (must divide d_mem and the
            hidden size); each has its own matrix A, normaliser z and write gate. The paper uses 1.
        cls_token_id, sep_token_id: encoder models only; taken from the base model's config when None.
    """

    num_mem_tokens: int = 8
    segment_size: int = 64
    bptt_depth: int = -1
    memory_kind: str = "rmt"
    self_retrieval: bool = False
    memory_write: str = "replace"
    write_gate_bias: float = 1.0
    write_sparsity: float = 0.05
    retrieval_heads: int = 1
    d_mem: int = 64
    dpfp_nu: int = 3
    armt_heads: int = 1
    cls_token_id: int | None = None
    sep_token_id: int | None = None

    def __post_init__(self):
        def _is_int(value):
            return isinstance(value, int) and not isinstance(value, bool)

        allowed = memory_kind_names()
        if self.memory_kind not in allowed:
            raise UsageError(f"unknown memory_kind {self.memory_kind!r}; allowed: {', '.join(allowed)}")
        if not isinstance(self.self_retrieval, bool):
            raise UsageError(f"self_retrieval must be true or false, got {self.self_retrieval!r}")
        if self.self_retrieval:  # the old spelling of memory_kind="rmt-r"
            if self.memory_kind not in ("rmt", "rmt-r"):
                raise UsageError(f"self_retrieval=True means memory_kind='rmt-r' and conflicts with memory_kind={self.memory_kind!r}; "
                                 "set only memory_kind")
            self.memory_kind = "rmt-r"
        self.self_retrieval = self.memory_kind == "rmt-r"
        if not _is_int(self.segment_size) or self.segment_size < 1:
            raise UsageError(f"segment_size must be an integer >= 1, got {self.segment_size!r}")
        if not _is_int(self.num_mem_tokens) or self.num_mem_tokens < 0:
            raise UsageError(f"num_mem_tokens must be an integer >= 0, got {self.num_mem_tokens!r}")
        if not _is_int(self.bptt_depth) or (self.bptt_depth < 1 and self.bptt_depth != -1):
            raise UsageError(f"bptt_depth must be -1 (all segments) or an integer >= 1, got {self.bptt_depth!r}")
        if self.memory_kind == "rmt-r" and self.num_mem_tokens == 0:
            raise UsageError("memory_kind='rmt-r' (self_retrieval=True) needs num_mem_tokens >= 1, got num_mem_tokens=0")
        if self.memory_kind == "armt" and self.num_mem_tokens == 0:
            raise UsageError("memory_kind='armt' needs num_mem_tokens >= 1 (they write the associative memory), got num_mem_tokens=0")
        self.write_gate_bias, self.write_sparsity = check_memory_write(
            self.memory_kind, self.memory_write, self.write_gate_bias, self.write_sparsity)
        if not _is_int(self.retrieval_heads) or self.retrieval_heads < 1:
            raise UsageError(f"retrieval_heads must be an integer >= 1, got {self.retrieval_heads!r}")
        if not _is_int(self.d_mem) or self.d_mem < 1:
            raise UsageError(f"d_mem must be an integer >= 1, got {self.d_mem!r}")
        if not _is_int(self.dpfp_nu) or self.dpfp_nu < 1:
            raise UsageError(f"dpfp_nu must be an integer >= 1, got {self.dpfp_nu!r}")
        if not _is_int(self.armt_heads) or self.armt_heads < 1:
            raise UsageError(f"armt_heads must be an integer >= 1, got {self.armt_heads!r}")
        if self.d_mem % self.armt_heads:
            raise UsageError(f"armt_heads={self.armt_heads} must divide d_mem={self.d_mem}")
        for name in ("cls_token_id", "sep_token_id"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 0):
                raise UsageError(f"{name} must be None or a token id >= 0, got {value!r}")

    def to_dict(self) -> dict:
        data = asdict(self)
        del data["self_retrieval"]  # derived from memory_kind; v0.1 files that have it still load
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "RMTConfig":
        if not isinstance(data, dict):
            raise UsageError(f"an RMT config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UsageError(f"unknown RMT config keys {unknown}; allowed: {sorted(known)}")
        return cls(**data)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"
