"""TrainConfig: every setting of a training run, validated on construction.

The same dataclass is filled from CLI flags (`rmt train --segment-size 32 ...`) or from a YAML/JSON
file (`rmt train --config run.yaml`, keys = flag names with ``_``); the run saves it as
``train_config.json`` in its output dir, so ``rmt train --config OUT/train_config.json`` repeats it.

The model's memory settings are its ``RMTConfig`` (``TrainConfig.rmt``), validated there and by the
memory kinds; this module only adds the training settings. Each value is checked by its meaning
(signs, ranges, types), and a value read from a file as text is read as the field's declared type
first (PyYAML reads ``3e-4`` as a string).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from rmt.babilong.tasks import TASKS as BABI_TASKS
from rmt.errors import UsageError
from rmt.memory.config import RMTConfig, memory_options as rmt_options
from rmt.memory.options import from_text

BABILONG_TASKS = tuple(BABI_TASKS)  # the task specs of rmt.babilong.tasks
MEMORIZATION_TASKS = ("memorize", "detect", "reason")  # arXiv 2304.11062, section 4
LM_TASKS = ("lm",)
TASKS = BABILONG_TASKS + MEMORIZATION_TASKS + LM_TASKS
SCHEDULERS = ("constant", "linear", "cosine")
ARCHS = ("gpt2", "llama")
MIXED_PRECISION = ("auto", "no", "fp16", "bf16")

# What a field is to a run (``field(metadata={"role": ...})``); the resume keys and the settings
# `rmt reproduce` compares are derived from it.
IDENTITY = "identity"  # what a checkpoint contains or which data it saw: a resumed run must keep it
BUDGET = "budget"      # step budgets, evaluation and speed: may change when a run is resumed
OUTPUT = "output"      # where and how often things are written or shown: never changes the weights
# The memory settings whose defaults in training differ from RMTConfig's.
MEMORY_DEFAULTS = {"segment_size": 32}


def _field(default=None, role: str = IDENTITY, factory=None):
    if factory is not None:
        return field(default_factory=factory, metadata={"role": role})
    return field(default=default, metadata={"role": role})


def memory_options() -> tuple:
    """The memory settings of a run (``rmt.memory.kinds.base.Option``s), one flag each:
    ``RMTConfig``'s, core and every registered kind's, less those only encoders read (training
    builds causal LMs), with the training defaults."""
    return tuple(replace(option, default=MEMORY_DEFAULTS.get(option.name, option.default))
                 for option in rmt_options() if not option.encoder_only)


def _memory_config(rmt, settings: dict) -> RMTConfig:
    """The run's RMTConfig: ``rmt`` (an RMTConfig, a mapping, or None for the training defaults)
    with ``settings`` (flat memory settings) on top."""
    if rmt is None:
        base = dict(MEMORY_DEFAULTS)
    elif isinstance(rmt, RMTConfig):
        base = rmt.to_dict()
    elif isinstance(rmt, dict):
        base = {**MEMORY_DEFAULTS, **rmt}
    else:
        raise UsageError(f"rmt must be an RMTConfig or a mapping of memory settings, got {type(rmt).__name__}")
    return RMTConfig(**{**base, **settings})


def training_fields() -> list:
    """TrainConfig's own fields (every field but ``rmt``), in order."""
    return [f for f in fields(TrainConfig) if f.name != "rmt"]


def setting_names(*roles: str) -> tuple[str, ...]:
    """Every setting of a run with one of ``roles`` (all when none), in the order of the fields,
    the memory settings where ``rmt`` stands (memory settings have the role IDENTITY)."""
    names = []
    for f in fields(TrainConfig):
        role = f.metadata.get("role", IDENTITY)
        if roles and role not in roles:
            continue
        names.extend(o.name for o in memory_options()) if f.name == "rmt" else names.append(f.name)
    return tuple(names)


def _declared_type(f) -> type:
    """A field's declared element type (annotations are strings here): int, float, bool, str or list."""
    text = str(f.type)
    for name, kind in (("list", list), ("bool", bool), ("float", float), ("int", int)):
        if name in text:
            return kind
    return str


@dataclass
class TrainConfig:
    """One training run.

    Task and data:
        task: ``qa1``..``qa20`` (BABILong: loss on the answer tokens only), ``memorize`` (fact at
            the start, question at the end), ``detect`` (fact at a random position), ``reason``
            (two facts, the question needs both) over background text, or ``lm`` (language
            modelling over segments; evaluation reports perplexity per segment position).
        n_facts: facts per story (lo, hi) for the BABILong tasks (None: the generator's default).
        warmup_facts, warmup_facts_steps: facts per story (lo, hi) of the training batches of the
            first ``warmup_facts_steps`` steps (a curriculum on story length; evaluation keeps
            ``n_facts``). Multi-hop tasks learn from short stories first: SmolLM2 fine-tuned in
            context on qa2 stayed at 0.21-0.26 for 100 steps of full stories, and reached 0.875
            on unseen test stories after 150 steps of 2-6 facts, then 150 of full ones.
        background: a directory of books for background text (None: the built-in fallback text);
            ``"none"``: no background at all, the BABILong tasks' inputs are the facts alone (the
            "0k" length of ``rmt eval``: in-context QA), whatever the segment size.
    Model:
        model: HF hub name or local path of the base causal LM; None builds a small model from
            scratch: ``arch`` ``gpt2`` (learned positions) or ``llama`` (rotary positions), with
            ``n_layer`` / ``n_embd`` / ``n_head``.
        tokenizer: HF tokenizer name or path; None trains a word-level tokenizer on the task's
            text locally (``vocab_size`` words at most).
        rmt: the model's memory settings, an ``RMTConfig`` (``memory_kind``, ``num_mem_tokens``,
            ``segment_size``, ... and every memory kind's own options, see docs/memory.md), checked
            there on every change: ``cfg.rmt.segment_size``. Given as an ``RMTConfig`` or a mapping
            (``TrainConfig(rmt={"segment_size": 16})``: the training defaults below, then these).
            ``rmt train`` has a flag for each, and ``train_config.json`` keeps them flat, beside the
            training settings (``from_dict`` reads that form). Training defaults: ``segment_size`` 32.
        memory: False trains the same base model without memory on whole inputs (full attention):
            the baseline of the quickstart. Its window is ``max(curriculum) * segment_size``.
    Curriculum:
        curriculum: segments per stage, non-decreasing (e.g. [1, 2, 4]).
        stage_steps: optimizer steps per stage at most; ``stage_threshold`` (0..1) moves on earlier
            once the validation accuracy reaches it (checked every ``eval_every`` steps).
        vary_n_segments: each batch draws its number of segments uniformly from 1..stage segments.
    Optimisation:
        lr, weight_decay, scheduler, warmup_steps, grad_clip: AdamW and its schedule.
        memory_lr: the learning rate of the parameters the memory adds (memory tokens, write gate,
            ARMT's projections; None: ``lr``): new parameters beside a pretrained model may need a
            higher rate than the model itself.
    Adapters (rmt.memory.lora, through peft):
        lora_rank: 0 (default) fine-tunes every weight of the base model; R >= 1 freezes the base
            (its embeddings too) and trains LoRA adapters of rank R in its linear layers, plus the
            memory's own parameters: a run and its checkpoints hold only those (a few MB for
            SmolLM2-135M) and name the base. Needs a pretrained ``model`` and memory.
        lora_alpha, lora_dropout: the adapters' scale (alpha / rank) and input dropout. The RMT
            team's BABILong models use rank 8, alpha 32, dropout 0.1; the default dropout is 0: on
            a CPU, peft's dropout (one mask per adapted layer) made a SmolLM2 step 1.5x slower and
            its activations ~1 GB larger (bench/adapters.py).
        lora_targets: comma-separated module names that get adapters (e.g. ``q_proj,v_proj``);
            None: every linear layer of the decoder blocks.
    Speed and memory:
        grad_accum: micro-batches per optimizer step: each step trains on ``batch_size *
            grad_accum`` samples, ``batch_size`` at a time, with the gradient of one batch of that
            size (each micro-batch's loss weighted by its share of the answer tokens).
        mixed_precision: ``no``, ``fp16`` or ``bf16``: accelerate's autocast (also on CPU for bf16);
            weights and optimizer state stay fp32. ``auto`` (default): ``bf16`` for a pretrained
            ``model`` on hardware with native bf16 (a CUDA GPU that has it; a CPU with AVX512-BF16
            or AMX), else ``no``; the run's ``train_config.json`` records the choice.
        gradient_checkpointing: recompute every decoder layer's activations in the backward pass
            instead of keeping them (HF's activation checkpointing of the base model, which the
            segment loop's layer calls honour): memory for ``segments x layers`` activations
            becomes memory for one layer's, for about one more forward pass of time. Same gradients.
    Output:
        save_every, save_every_minutes: a checkpoint every ``save_every`` steps, and also whenever
            ``save_every_minutes`` of wall time have passed since the last one (None: steps only),
            so a stopped machine loses at most that much training.
    """

    task: str = "qa1"
    n_facts: list[int] | None = None
    warmup_facts: list[int] | None = None
    warmup_facts_steps: int = 0
    background: str | None = None
    model: str | None = None
    tokenizer: str | None = None
    vocab_size: int = 5000
    arch: str = "gpt2"
    n_layer: int = 2
    n_embd: int = 128
    n_head: int = 4
    memory: bool = True
    rmt: RMTConfig | None = None  # None: the training defaults; see the class docstring
    curriculum: list[int] = _field(factory=lambda: [1, 2, 4])
    stage_steps: int = _field(200, BUDGET)
    stage_threshold: float | None = _field(None, BUDGET)
    vary_n_segments: bool = True
    batch_size: int = 32
    lr: float = 1e-3
    memory_lr: float | None = None
    weight_decay: float = 0.01
    scheduler: str = "constant"
    warmup_steps: int = 0
    grad_clip: float = 1.0
    lora_rank: int = 0
    lora_alpha: float = 32.0
    lora_dropout: float = 0.0
    lora_targets: str | None = None
    grad_accum: int = 1
    seed: int = 0
    output_dir: str = _field("runs/train", OUTPUT)
    save_every: int = _field(100, OUTPUT)
    save_every_minutes: float | None = _field(None, OUTPUT)
    eval_every: int = _field(100, BUDGET)
    eval_samples: int = _field(100, BUDGET)
    eval_batch_size: int = _field(50, OUTPUT)
    log_every: int = _field(10, OUTPUT)
    tensorboard: bool = _field(False, OUTPUT)
    mixed_precision: str = _field("auto", BUDGET)
    gradient_checkpointing: bool = _field(False, BUDGET)
    threads: int | None = _field(None, OUTPUT)
    progress: bool = _field(True, OUTPUT)

    def __post_init__(self):
        def need(cond, message):
            if not cond:
                raise UsageError(message)

        def is_int(v):
            return isinstance(v, int) and not isinstance(v, bool)

        def is_number(v):
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        if not isinstance(self.rmt, RMTConfig):
            self.rmt = _memory_config(self.rmt, {})
        need(self.task in TASKS, f"unknown task {self.task!r}; allowed: {', '.join(TASKS)}")
        need(not (self.background == "none" and self.task in LM_TASKS),
             f"background='none' gives the QA tasks facts without background text; task {self.task!r} "
             f"is language modelling on background text and needs some (a books dir, or leave it out)")
        for name in ("background", "model", "tokenizer"):
            value = getattr(self, name)
            need(value is None or (isinstance(value, str) and value.strip()),
                 f"{name} must be a non-empty string (a name or a path) or left out, got {value!r}")
        need(isinstance(self.output_dir, str) and self.output_dir.strip(),
             f"output_dir must be a non-empty string (a path), got {self.output_dir!r}")
        if isinstance(self.curriculum, (int, str)):
            try:
                self.curriculum = [int(x) for x in str(self.curriculum).split(",")]
            except ValueError:
                raise UsageError(f"curriculum must be a list of segment counts >= 1, got {self.curriculum!r}") from None
        need(isinstance(self.curriculum, (list, tuple)), f"curriculum must be a list of segment counts >= 1, got {self.curriculum!r}")
        self.curriculum = list(self.curriculum)
        need(len(self.curriculum) > 0 and all(is_int(n) and n >= 1 for n in self.curriculum),
             f"curriculum must be a list of segment counts >= 1, got {self.curriculum!r}")
        for a, b in zip(self.curriculum, self.curriculum[1:]):
            need(b >= a, f"curriculum goes down ({a} -> {b}) in {self.curriculum}; stages must not decrease, e.g. 1,2,4")
        def fact_range(name):  # n_facts, warmup_facts: None, N or [lo, hi] -> None or [lo, hi]
            value = getattr(self, name)
            if value is None:
                return None
            if is_int(value):
                value = [value, value]
            need(isinstance(value, (list, tuple)) and len(value) == 2 and all(is_int(n) and n >= 1 for n in value)
                 and value[0] <= value[1], f"{name} must be [lo, hi] with 1 <= lo <= hi, got {getattr(self, name)!r}")
            return list(value)

        self.n_facts, self.warmup_facts = fact_range("n_facts"), fact_range("warmup_facts")
        need(is_int(self.warmup_facts_steps) and self.warmup_facts_steps >= 0,
             f"warmup_facts_steps must be an integer >= 0, got {self.warmup_facts_steps!r}")
        need((self.warmup_facts is None) == (self.warmup_facts_steps == 0),
             f"warmup_facts and warmup_facts_steps go together (stories of warmup_facts facts for the first "
             f"warmup_facts_steps steps), got warmup_facts={self.warmup_facts!r}, warmup_facts_steps={self.warmup_facts_steps!r}")
        need(self.warmup_facts is None or self.task in BABILONG_TASKS,
             f"warmup_facts is for the BABILong tasks (qa1..qa20), not task {self.task!r}")
        for name in ("vocab_size", "n_layer", "n_embd", "n_head", "stage_steps", "batch_size",
                     "save_every", "eval_every", "eval_samples", "eval_batch_size", "log_every"):
            value = getattr(self, name)
            need(is_int(value) and value >= 1, f"{name} must be an integer >= 1, got {value!r}")
        need(self.n_embd % self.n_head == 0, f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        for name in ("memory", "vary_n_segments", "tensorboard", "gradient_checkpointing", "progress"):
            value = getattr(self, name)
            need(isinstance(value, bool), f"{name} must be true or false, got {value!r}")
        need(is_int(self.warmup_steps) and self.warmup_steps >= 0, f"warmup_steps must be an integer >= 0, got {self.warmup_steps!r}")
        need(is_int(self.seed) and self.seed >= 0, f"seed must be an integer >= 0, got {self.seed!r}")
        need(is_number(self.lr) and self.lr > 0, f"lr must be a finite number > 0, got {self.lr!r}")
        need(self.memory_lr is None or (is_number(self.memory_lr) and self.memory_lr > 0),
             f"memory_lr must be a finite number > 0 or left out (the lr of everything), got {self.memory_lr!r}")
        if self.memory_lr is not None:
            self.memory_lr = float(self.memory_lr)
        # A negative decay pushes weights away from 0; a negative clip norm turns the clipped
        # gradient around: both train uphill without an error (loss 5.3 -> 22 in 40 steps).
        need(is_number(self.weight_decay) and self.weight_decay >= 0,
             f"weight_decay must be a finite number >= 0 (0: no decay), got {self.weight_decay!r}")
        need(is_number(self.grad_clip) and self.grad_clip >= 0,
             f"grad_clip must be a finite number >= 0 (0: no clipping), got {self.grad_clip!r}")
        self.lr, self.weight_decay, self.grad_clip = float(self.lr), float(self.weight_decay), float(self.grad_clip)
        need(self.arch in ARCHS, f"unknown arch {self.arch!r}; allowed: {', '.join(ARCHS)}")
        need(self.scheduler in SCHEDULERS, f"unknown scheduler {self.scheduler!r}; allowed: {', '.join(SCHEDULERS)}")
        need(self.mixed_precision in MIXED_PRECISION,
             f"unknown mixed_precision {self.mixed_precision!r}; allowed: {', '.join(MIXED_PRECISION)}")
        need(self.stage_threshold is None or (is_number(self.stage_threshold) and 0 < self.stage_threshold <= 1),
             f"stage_threshold must be in (0, 1] or None, got {self.stage_threshold!r}")
        need(self.threads is None or (is_int(self.threads) and self.threads >= 1),
             f"threads must be an integer >= 1, got {self.threads!r}")
        need(is_int(self.grad_accum) and self.grad_accum >= 1,
             f"grad_accum must be an integer >= 1 (micro-batches per optimizer step), got {self.grad_accum!r}")
        need(self.save_every_minutes is None or (is_number(self.save_every_minutes) and self.save_every_minutes > 0),
             f"save_every_minutes must be a number > 0 or left out (save by steps only), got {self.save_every_minutes!r}")
        need(is_int(self.lora_rank) and self.lora_rank >= 0,
             f"lora_rank must be an integer >= 0 (0: full fine-tuning), got {self.lora_rank!r}")
        need(is_number(self.lora_alpha) and self.lora_alpha > 0, f"lora_alpha must be a number > 0, got {self.lora_alpha!r}")
        need(is_number(self.lora_dropout) and 0 <= self.lora_dropout < 1,
             f"lora_dropout must be a number in [0, 1), got {self.lora_dropout!r}")
        self.lora_alpha, self.lora_dropout = float(self.lora_alpha), float(self.lora_dropout)
        if isinstance(self.lora_targets, (list, tuple)):
            self.lora_targets = ",".join(map(str, self.lora_targets))
        need(self.lora_targets is None or (isinstance(self.lora_targets, str) and all(t.strip() for t in self.lora_targets.split(","))),
             f"lora_targets must be comma-separated module names (e.g. q_proj,v_proj) or left out, got {self.lora_targets!r}")
        if self.lora_rank:
            need(self.model is not None, "lora_rank > 0 puts adapters on a pretrained base model: give --model "
                                         "(a model built from scratch has no base to keep frozen; use --lora-rank 0)")
            need(self.memory, "lora_rank > 0 is for models with memory; the --no-memory baseline trains every weight "
                              "(use --lora-rank 0)")
        elif self.lora_targets is not None:
            need(False, f"lora_targets={self.lora_targets!r} needs lora_rank >= 1 (adapters to put there)")

    # ------------------------------------------------------------------ every setting by name
    def settings(self) -> dict:
        """Every setting by name: the training fields and, beside them, the memory settings of
        ``rmt`` (``self_retrieval`` included). A copy: change the config itself."""
        return {**{f.name: getattr(self, f.name) for f in training_fields()}, **vars(self.rmt)}

    # ------------------------------------------------------------------ derived
    @property
    def max_segments(self) -> int:
        return max(self.curriculum)

    @property
    def lora(self):
        """The adapters' settings (``rmt.memory.lora.LoraSettings``), or None (lora_rank 0)."""
        if not self.lora_rank:
            return None
        from rmt.memory.lora import LoraSettings  # the model side: imports torch

        targets = tuple(t.strip() for t in self.lora_targets.split(",")) if self.lora_targets else ()
        return LoraSettings(self.lora_rank, self.lora_alpha, self.lora_dropout, targets)

    @property
    def total_steps(self) -> int:
        """Upper bound on optimizer steps (a threshold may end stages earlier)."""
        return self.stage_steps * len(self.curriculum)

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict:
        """The settings, flat (memory settings beside the training ones): train_config.json."""
        data = {}
        for f in fields(self):
            if f.name == "rmt":
                memory = self.rmt.to_dict()
                data.update((option.name, memory[option.name]) for option in memory_options() if option.name in memory)
            else:
                value = getattr(self, f.name)
                data[f.name] = list(value) if isinstance(value, list) else value
        return data

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        """The settings, flat as in ``train_config.json`` and ``rmt train``'s flags (the memory
        settings beside the training ones, or in a mapping ``rmt``)."""
        if not isinstance(data, dict):
            raise UsageError(f"a training config must be a mapping of settings, got {type(data).__name__}")
        data = {str(k).replace("-", "_"): v for k, v in data.items()}
        memory = {option.name: option for option in memory_options()}
        own = {f.name: f for f in training_fields()}
        unknown = sorted(set(data) - set(memory) - set(own) - {"rmt"})
        if unknown:
            raise UsageError(f"unknown training config keys {unknown}; allowed: {sorted(set(memory) | set(own))}")
        # A file's text is read as the field's declared type (PyYAML reads 3e-4 as a string).
        settings, rmt = {}, data.pop("rmt", None)
        for name, value in data.items():
            if name in memory:
                settings[name] = from_text(value, memory[name].type)
            elif name in own and _declared_type(own[name]) in (int, float):
                data[name] = from_text(value, _declared_type(own[name]))
        own_values = {name: value for name, value in data.items() if name not in memory}
        return cls(**own_values, rmt=_memory_config(rmt, settings) if settings or rmt is not None else None)

    @classmethod
    def from_file(cls, path) -> "TrainConfig":
        """Read a YAML or JSON file (JSON is YAML, so one parser reads both)."""
        import yaml  # lazy: ~30 ms, only for --config files (`rmt train --help` reads this module)

        path = Path(path)
        if not path.is_file():
            raise UsageError(f"config file {path} does not exist")
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
        mine, theirs = self.settings(), other.settings()
        return [k for k in setting_names(IDENTITY) if mine.get(k) != theirs.get(k)]


def __getattr__(name):
    # RESUME_KEYS: derived from the fields' roles (module attribute for the code that read it).
    if name == "RESUME_KEYS":
        return setting_names(IDENTITY)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
