"""TrainConfig: every setting of a training run, validated on construction.

The same dataclass is filled from CLI flags (`rmt train --segment-size 32 ...`) or from a YAML/JSON
file (`rmt train --config run.yaml`, keys = flag names with ``_``); the run saves it as
``train_config.json`` in its output dir, so ``rmt train --config OUT/train_config.json`` repeats it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from rmt.babilong.tasks import TASKS as BABI_TASKS
from rmt.errors import UsageError

BABILONG_TASKS = tuple(BABI_TASKS)  # the task specs of rmt.babilong.tasks
MEMORIZATION_TASKS = ("memorize", "detect", "reason")  # arXiv 2304.11062, section 4
LM_TASKS = ("lm",)
TASKS = BABILONG_TASKS + MEMORIZATION_TASKS + LM_TASKS
SCHEDULERS = ("constant", "linear", "cosine")
ARCHS = ("gpt2", "llama")
MIXED_PRECISION = ("no", "fp16", "bf16")

# Fields that change what a checkpoint contains or which data it saw: a resume dir whose saved
# config differs in one of these belongs to another run. (Step budgets, logging and output paths
# may change between a run and its resume.)
RESUME_KEYS = (
    "task", "model", "tokenizer", "vocab_size", "arch", "n_layer", "n_embd", "n_head", "num_mem_tokens",
    "segment_size", "bptt_depth", "memory_kind", "self_retrieval", "memory_write", "write_gate_bias", "write_sparsity", "memory", "batch_size", "lr", "weight_decay", "scheduler",
    "warmup_steps", "grad_clip", "seed", "curriculum", "vary_n_segments", "n_facts", "background",
)


@dataclass
class TrainConfig:
    """One training run.

    Task and data:
        task: ``qa1``..``qa20`` (BABILong: loss on the answer tokens only), ``memorize`` (fact at
            the start, question at the end), ``detect`` (fact at a random position), ``reason``
            (two facts, the question needs both) over background text, or ``lm`` (language
            modelling over segments; evaluation reports perplexity per segment position).
        n_facts: facts per story (lo, hi) for the BABILong tasks (None: the generator's default).
        background: a directory of books for background text (None: the built-in fallback text);
            ``"none"``: no background at all, the BABILong tasks' inputs are the facts alone (the
            "0k" length of ``rmt eval``: in-context QA), whatever the segment size.
    Model:
        model: HF hub name or local path of the base causal LM; None builds a small model from
            scratch: ``arch`` ``gpt2`` (learned positions) or ``llama`` (rotary positions), with
            ``n_layer`` / ``n_embd`` / ``n_head``.
        tokenizer: HF tokenizer name or path; None trains a word-level tokenizer on the task's
            text locally (``vocab_size`` words at most).
        memory_kind: ``rmt`` (memory tokens), ``rmt-r`` (RMT + self-retrieval, arXiv 2402.10790) or
            ``armt`` (associative memory in every layer, arXiv 2407.04841); see docs/memory.md.
        self_retrieval: the v0.1 spelling of ``memory_kind="rmt-r"`` (still accepted).
        memory_write, write_gate_bias, write_sparsity: RMT/RMT-R write rule, ``replace`` or ``gated``
            (a learned 0/1 gate per memory value, trained to stay shut; see RMTConfig).
        memory: False trains the same base model without memory on whole inputs (full attention):
            the baseline of the quickstart. Its window is ``max(curriculum) * segment_size``.
    Curriculum:
        curriculum: segments per stage, non-decreasing (e.g. [1, 2, 4]).
        stage_steps: optimizer steps per stage at most; ``stage_threshold`` (0..1) moves on earlier
            once the validation accuracy reaches it (checked every ``eval_every`` steps).
        vary_n_segments: each batch draws its number of segments uniformly from 1..stage segments.
    Speed and memory:
        mixed_precision: ``no``, ``fp16`` or ``bf16``: accelerate's autocast (also on CPU for bf16);
            weights and optimizer state stay fp32.
        gradient_checkpointing: recompute every decoder layer's activations in the backward pass
            instead of keeping them (HF's activation checkpointing of the base model, which the
            segment loop's layer calls honour): memory for ``segments x layers`` activations
            becomes memory for one layer's, for about one more forward pass of time. Same gradients.
    """

    task: str = "qa1"
    n_facts: list[int] | None = None
    background: str | None = None
    model: str | None = None
    tokenizer: str | None = None
    vocab_size: int = 5000
    arch: str = "gpt2"
    n_layer: int = 2
    n_embd: int = 128
    n_head: int = 4
    memory: bool = True
    num_mem_tokens: int = 8
    segment_size: int = 32
    bptt_depth: int = -1
    memory_kind: str = "rmt"
    self_retrieval: bool = False
    memory_write: str = "replace"
    write_gate_bias: float = 1.0
    write_sparsity: float = 0.05
    curriculum: list[int] = field(default_factory=lambda: [1, 2, 4])
    stage_steps: int = 200
    stage_threshold: float | None = None
    vary_n_segments: bool = True
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    scheduler: str = "constant"
    warmup_steps: int = 0
    grad_clip: float = 1.0
    seed: int = 0
    output_dir: str = "runs/train"
    save_every: int = 100
    eval_every: int = 100
    eval_samples: int = 100
    eval_batch_size: int = 50
    log_every: int = 10
    tensorboard: bool = False
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    threads: int | None = None
    progress: bool = True

    def __post_init__(self):
        def need(cond, message):
            if not cond:
                raise UsageError(message)

        def is_int(v):
            return isinstance(v, int) and not isinstance(v, bool)

        need(self.task in TASKS, f"unknown task {self.task!r}; allowed: {', '.join(TASKS)}")
        need(not (self.background == "none" and self.task in LM_TASKS),
             f"background='none' gives the QA tasks facts without background text; task {self.task!r} "
             f"is language modelling on background text and needs some (a books dir, or leave it out)")
        if isinstance(self.curriculum, (int, str)):
            self.curriculum = [int(x) for x in str(self.curriculum).split(",")]
        self.curriculum = list(self.curriculum)
        need(len(self.curriculum) > 0 and all(is_int(n) and n >= 1 for n in self.curriculum),
             f"curriculum must be a list of segment counts >= 1, got {self.curriculum!r}")
        for a, b in zip(self.curriculum, self.curriculum[1:]):
            need(b >= a, f"curriculum goes down ({a} -> {b}) in {self.curriculum}; stages must not decrease, e.g. 1,2,4")
        if self.n_facts is not None:
            if is_int(self.n_facts):
                self.n_facts = [self.n_facts, self.n_facts]
            self.n_facts = list(self.n_facts)
            need(len(self.n_facts) == 2 and all(is_int(n) and n >= 1 for n in self.n_facts)
                 and self.n_facts[0] <= self.n_facts[1],
                 f"n_facts must be [lo, hi] with 1 <= lo <= hi, got {self.n_facts!r}")
        for name in ("vocab_size", "n_layer", "n_embd", "n_head", "segment_size", "stage_steps", "batch_size",
                     "save_every", "eval_every", "eval_samples", "eval_batch_size", "log_every"):
            value = getattr(self, name)
            need(is_int(value) and value >= 1, f"{name} must be an integer >= 1, got {value!r}")
        need(self.n_embd % self.n_head == 0, f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        need(is_int(self.num_mem_tokens) and self.num_mem_tokens >= 0,
             f"num_mem_tokens must be an integer >= 0, got {self.num_mem_tokens!r}")
        need(is_int(self.bptt_depth) and (self.bptt_depth == -1 or self.bptt_depth >= 1),
             f"bptt_depth must be -1 (all segments) or >= 1, got {self.bptt_depth!r}")
        from rmt.memory.config import memory_kind_names

        need(self.memory_kind in memory_kind_names(),
             f"unknown memory_kind {self.memory_kind!r}; allowed: {', '.join(memory_kind_names())}")
        need(isinstance(self.self_retrieval, bool), f"self_retrieval must be true or false, got {self.self_retrieval!r}")
        need(isinstance(self.gradient_checkpointing, bool),
             f"gradient_checkpointing must be true or false, got {self.gradient_checkpointing!r}")
        if self.self_retrieval:  # the v0.1 spelling of memory_kind="rmt-r"
            need(self.memory_kind in ("rmt", "rmt-r"), f"self_retrieval=True means memory_kind='rmt-r' and conflicts with "
                                                       f"memory_kind={self.memory_kind!r}; set only memory_kind")
            self.memory_kind = "rmt-r"
        self.self_retrieval = self.memory_kind == "rmt-r"
        from rmt.memory.config import check_memory_write

        self.write_gate_bias, self.write_sparsity = check_memory_write(
            self.memory_kind, self.memory_write, self.write_gate_bias, self.write_sparsity)
        need(is_int(self.warmup_steps) and self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps!r}")
        need(isinstance(self.lr, (int, float)) and self.lr > 0, f"lr must be > 0, got {self.lr!r}")
        need(self.arch in ARCHS, f"unknown arch {self.arch!r}; allowed: {', '.join(ARCHS)}")
        need(self.scheduler in SCHEDULERS, f"unknown scheduler {self.scheduler!r}; allowed: {', '.join(SCHEDULERS)}")
        need(self.mixed_precision in MIXED_PRECISION,
             f"unknown mixed_precision {self.mixed_precision!r}; allowed: {', '.join(MIXED_PRECISION)}")
        need(self.stage_threshold is None or 0 < self.stage_threshold <= 1,
             f"stage_threshold must be in (0, 1] or None, got {self.stage_threshold!r}")
        need(self.threads is None or (is_int(self.threads) and self.threads >= 1),
             f"threads must be an integer >= 1, got {self.threads!r}")

    # ------------------------------------------------------------------ derived
    @property
    def max_segments(self) -> int:
        return max(self.curriculum)

    @property
    def total_steps(self) -> int:
        """Upper bound on optimizer steps (a threshold may end stages earlier)."""
        return self.stage_steps * len(self.curriculum)

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict:
        data = asdict(self)
        del data["self_retrieval"]  # derived from memory_kind; files that have it still load
        return data

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        if not isinstance(data, dict):
            raise UsageError(f"a training config must be a mapping of settings, got {type(data).__name__}")
        data = {k.replace("-", "_"): v for k, v in data.items()}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UsageError(f"unknown training config keys {unknown}; allowed: {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_file(cls, path) -> "TrainConfig":
        """Read a YAML or JSON file (JSON is YAML, so one parser reads both)."""
        import yaml

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw[:exc.start].count(b"\n") + 1
            raise UsageError(f"config file {path}, line {line}: not UTF-8 text (byte {raw[exc.start]:#04x})") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise UsageError(f"config file {path} is not valid YAML/JSON{where}: {problem}") from None
        return cls.from_dict(data or {})

    def resume_mismatch(self, other: "TrainConfig") -> list[str]:
        """The settings in which ``other`` (a saved run) differs from this one, that forbid resuming."""
        return [k for k in RESUME_KEYS if getattr(self, k) != getattr(other, k)]
