"""RMTConfig: the recurrent-memory settings, validated on construction and saved as JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields


@dataclass
class RMTConfig:
    """Settings of the recurrent memory wrapped around a base model.

    Args:
        num_mem_tokens: learned memory vectors read at the start of each segment and written at its
            end (0 turns the wrapper into plain segment-by-segment processing).
        segment_size: input tokens per segment; memory (and, for encoders, [CLS]/[SEP]) come on top.
        bptt_depth: how many of the last segments of a forward call stay in the gradient path through
            memory; -1 keeps all of them (full backpropagation through time).
        self_retrieval: RMT-R (arXiv 2402.10790): before each segment, the memory cross-attends to all
            memory states written so far.
        retrieval_heads: attention heads of the RMT-R cross-attention (must divide the hidden size).
        cls_token_id, sep_token_id: encoder models only; taken from the base model's config when None.
    """

    num_mem_tokens: int = 8
    segment_size: int = 64
    bptt_depth: int = -1
    self_retrieval: bool = False
    retrieval_heads: int = 1
    cls_token_id: int | None = None
    sep_token_id: int | None = None

    def __post_init__(self):
        def _is_int(value):
            return isinstance(value, int) and not isinstance(value, bool)

        if not _is_int(self.segment_size) or self.segment_size < 1:
            raise ValueError(f"segment_size must be an integer >= 1, got {self.segment_size!r}")
        if not _is_int(self.num_mem_tokens) or self.num_mem_tokens < 0:
            raise ValueError(f"num_mem_tokens must be an integer >= 0, got {self.num_mem_tokens!r}")
        if not _is_int(self.bptt_depth) or (self.bptt_depth < 1 and self.bptt_depth != -1):
            raise ValueError(f"bptt_depth must be -1 (all segments) or an integer >= 1, got {self.bptt_depth!r}")
        if not isinstance(self.self_retrieval, bool):
            raise ValueError(f"self_retrieval must be true or false, got {self.self_retrieval!r}")
        if self.self_retrieval and self.num_mem_tokens == 0:
            raise ValueError("self_retrieval=True needs num_mem_tokens >= 1, got num_mem_tokens=0")
        if not _is_int(self.retrieval_heads) or self.retrieval_heads < 1:
            raise ValueError(f"retrieval_heads must be an integer >= 1, got {self.retrieval_heads!r}")
        for name in ("cls_token_id", "sep_token_id"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 0):
                raise ValueError(f"{name} must be None or a token id >= 0, got {value!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "RMTConfig":
        if not isinstance(data, dict):
            raise ValueError(f"an RMT config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown RMT config keys {unknown}; allowed: {sorted(known)}")
        return cls(**data)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"
