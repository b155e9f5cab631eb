"""RMTConfig: the recurrent-memory settings, validated on construction and saved as JSON.

The settings every kind has are ``CORE_OPTIONS``; the others belong to a memory kind (declared
torch-free in ``rmt.memory.kind_options.KIND_OPTIONS``; the kind, under rmt/memory/kinds/, checks
them). ``RMTConfig`` takes the options of every registered kind, so one config reads any
checkpoint's ``rmt_config.json``.
"""

from __future__ import annotations

import json

from rmt.errors import UsageError
from rmt.memory.kind_options import KIND_OPTIONS
from rmt.memory.options import Option

CORE_OPTIONS = (
    Option("num_mem_tokens", 8, int, minimum=0, help="Memory tokens per segment."),
    Option("segment_size", 64, int, minimum=1, help="Input tokens per segment."),
    Option("bptt_depth", -1, int, help="Segments gradients flow back through memory (-1: all)."),
    Option("memory_kind", "rmt", str, help="How memory is read and written: {kinds} (docs/memory.md)."),
    Option("self_retrieval", False, bool,
           help="Old spelling of --memory-kind rmt-r: memory cross-attends to all earlier memory states."),
    Option("cls_token_id", None, int, minimum=0, none_allowed=True, encoder_only=True,
           help="Encoders: the [CLS] token id (default: the base model's)."),
    Option("sep_token_id", None, int, minimum=0, none_allowed=True, encoder_only=True,
           help="Encoders: the [SEP] token id (default: the base model's)."),
)
_LEGACY = "self_retrieval"  # the v0.1 spelling of memory_kind="rmt-r"; never written to new files


def memory_kinds() -> dict:
    """The registry ``rmt.memory.kinds.MEMORY_KINDS`` (name -> MemoryKind class): the kinds' own
    checks (``check_config``) and behaviour. Their options are ``KIND_OPTIONS`` (torch-free)."""
    from rmt.memory.kinds import MEMORY_KINDS  # lazy: the kinds import torch; only a config's final check needs them

    return MEMORY_KINDS


def memory_kind_names() -> tuple[str, ...]:
    """The allowed ``memory_kind`` values: the keys of ``KIND_OPTIONS`` (and of the registry
    ``rmt.memory.kinds.MEMORY_KINDS``)."""
    return tuple(KIND_OPTIONS)


def memory_options() -> tuple[Option, ...]:
    """Every setting ``RMTConfig`` takes: the core ones, then each registered kind's own (a kind
    that extends another shares its options)."""
    found: dict[str, Option] = {option.name: option for option in CORE_OPTIONS}
    owners: dict[str, str] = {}
    for name, kind_options in KIND_OPTIONS.items():
        for option in kind_options:
            known = found.get(option.name)
            if known is not None and known != option:
                raise UsageError(f"memory_kind {name!r} declares option {option.name!r} unlike "
                                 f"{owners.get(option.name, 'the core settings')!r} does")
            found[option.name] = option
            owners.setdefault(option.name, name)
    kinds = ", ".join(KIND_OPTIONS)
    return tuple(option if option.name != "memory_kind" else
                 Option(option.name, option.default, option.type, option.help.format(kinds=kinds))
                 for option in found.values())


def _owners(name: str) -> list[str]:
    return [kind_name for kind_name, options in KIND_OPTIONS.items() if any(o.name == name for o in options)]


def _joined(names) -> str:
    names = [repr(n) for n in names]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


class RMTConfig:
    """Settings of the recurrent memory wrapped around a base model (``to_dict`` / ``from_dict``:
    ``rmt_config.json``). Bad values raise one ValueError naming the setting and what is allowed,
    on construction and on every change (``config.segment_size = 0`` raises; the config is unchanged).

    Args:
        memory_kind: how memory is read, written and carried (docs/memory.md), a key of
            ``rmt.memory.kinds.MEMORY_KINDS``:
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
        self_retrieval: the v0.1 spelling of ``memory_kind="rmt-r"`` (still accepted; kept equal to
            ``memory_kind == "rmt-r"``; not written to new checkpoints).
        cls_token_id, sep_token_id: encoder models only; taken from the base model's config when None.

    The memory kinds' own settings (keyword arguments; each kind's module says more):
        memory_write: RMT/RMT-R write rule (docs/memory.md, "Gated writes"): ``"replace"`` (the
            papers' RMT: the next memory is the hidden state at the write positions) or ``"gated"``
            (each memory value is either replaced by the written one or kept exactly, by a learned
            0/1 gate trained to stay shut: memory that is not rewritten cannot drift, however long
            the input).
        write_gate_bias: ``"gated"``: the gates' initial logit; > 0 starts every gate open, i.e.
            exactly ``"replace"``, and training shuts the gates it does not need.
        write_sparsity: ``"gated"``: weight of the mean gate-open probability added to the training
            loss (what shuts unneeded gates); 0 turns the pressure off.
        retrieval_heads: RMT-R: attention heads of the cross-attention (must divide the hidden size).
        d_mem: ARMT: size of the key/query projection of each layer, before the DPFP feature map.
        dpfp_nu: ARMT: order of the DPFP feature map (arXiv 2102.11174); keys have 2 * dpfp_nu *
            d_mem / armt_heads dimensions per head. The paper uses 3.
        armt_heads: ARMT: independent associative memories per layer (must divide d_mem and the
            hidden size); each has its own matrix A, normaliser z and write gate. The paper uses 1.
    """

    def __init__(self, num_mem_tokens: int = 8, segment_size: int = 64, bptt_depth: int = -1, memory_kind: str = "rmt",
                 self_retrieval: bool = False, **settings):
        options = memory_options()
        given = dict(num_mem_tokens=num_mem_tokens, segment_size=segment_size, bptt_depth=bptt_depth,
                     memory_kind=memory_kind, self_retrieval=self_retrieval, **settings)
        known = {option.name for option in options}
        unknown = sorted(set(given) - known)
        if unknown:
            raise UsageError(f"unknown RMT config keys {unknown}; allowed: {sorted(known)}")
        if memory_kind not in KIND_OPTIONS:
            raise UsageError(f"unknown memory_kind {memory_kind!r}; allowed: {', '.join(KIND_OPTIONS)}")
        if not isinstance(self_retrieval, bool):
            raise UsageError(f"self_retrieval must be true or false, got {self_retrieval!r}")
        if self_retrieval:  # the old spelling of memory_kind="rmt-r"
            if memory_kind not in ("rmt", "rmt-r"):
                raise UsageError(f"self_retrieval=True means memory_kind='rmt-r' and conflicts with memory_kind={memory_kind!r}; "
                                 "set only memory_kind")
            given["memory_kind"] = "rmt-r"
        given[_LEGACY] = given["memory_kind"] == "rmt-r"
        if bptt_depth != -1 and (isinstance(bptt_depth, bool) or not isinstance(bptt_depth, int) or bptt_depth < 1):
            raise UsageError(f"bptt_depth must be -1 (all segments) or an integer >= 1, got {bptt_depth!r}")
        for option in options:
            value = option.check(given.get(option.name, option.default))
            if option.exclusive and value != option.default and option.name not in {o.name for o in KIND_OPTIONS[given["memory_kind"]]}:
                raise UsageError(f"{option.name}={value!r} is {option.exclusive} of memory_kind {_joined(_owners(option.name))}; "
                                 f"memory_kind={given['memory_kind']!r} does not use it: use {option.name}={option.default!r}")
            self.__dict__[option.name] = value
        memory_kinds()[self.memory_kind].check_config(self)

    def __setattr__(self, name, value):
        # A change is checked as a new config would be (one UsageError naming the setting and what
        # is allowed, the config unchanged): no value skips validation.
        if name not in self.__dict__:
            raise UsageError(f"unknown RMT config key {name!r}; allowed: {sorted(self.__dict__)}")
        checked = type(self)(**{**self.to_dict(), name: value})
        self.__dict__.update(checked.__dict__)

    def to_dict(self) -> dict:
        data = dict(self.__dict__)
        del data[_LEGACY]  # derived from memory_kind; v0.1 files that have it still load
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "RMTConfig":
        if not isinstance(data, dict):
            raise UsageError(f"an RMT config must be a JSON object, got {type(data).__name__}")
        return cls(**data)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other.__dict__ == self.__dict__

    __hash__ = None  # mutable, as the dataclass it was

    def __repr__(self) -> str:
        return f"RMTConfig({', '.join(f'{k}={v!r}' for k, v in self.__dict__.items())})"
