"""The recipes of ``rmt reproduce``: what to train and how to evaluate it, as data to tune.

A recipe is one task of the tables. Every row of a recipe trains the same base model with the
recipe's ``train`` settings plus the row's overrides (``TrainConfig`` fields); ``RAG`` is a row
that trains nothing (the ``no memory`` model of the same seed reads the retrieved sentences).
Change a recipe here and rerun ``rmt reproduce`` into a new ``--output-dir``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from rmt.errors import UsageError
from rmt.training.config import TrainConfig

NO_MEMORY = "no memory"
RAG = "RAG"
LLM = "LLM"  # the recipe's pretrained base model, zero-shot: the benchmark prompts in its chat template

# The quickstart's model and schedule (docs/training.md): 2 layers x 64, segments of 32 tokens, 8
# memory tokens, curriculum 1 -> 2 -> 4, cosine learning rate 3e-3, batch 32.
SMALL = dict(
    n_layer=2, n_embd=64, n_head=4, segment_size=32, num_mem_tokens=8, curriculum=[1, 2, 4], stage_steps=450,
    vary_n_segments=True, batch_size=32, lr=3e-3, warmup_steps=50, scheduler="cosine", write_gate_bias=1.0,
    write_sparsity=0.05, eval_every=450, eval_samples=100, save_every=150, log_every=10,
)
# Rows: TrainConfig overrides of each model compared.
ROWS = {
    "RMT": {"memory_kind": "rmt", "memory_write": "gated"},
    "RMT-R": {"memory_kind": "rmt-r"},
    "ARMT": {"memory_kind": "armt"},
    NO_MEMORY: {"memory": False},
}
LONG = (1, 4, 16, 64, 256, 1024)  # segments: 256x the longest training input
# Fewer samples where one costs more (a 1024-segment input is 32k tokens).
LONG_SAMPLES = {1: 100, 4: 100, 16: 100, 64: 100, 256: 50, 1024: 25}
SHORT = (1, 4, 16, 64)
SHORT_SAMPLES = {1: 100, 4: 100, 16: 100, 64: 100}
# RAG embeds every sentence of the haystack (~80 sentences/s on one busy core): it is evaluated at
# the shorter lengths only, on fewer samples.
RAG_SEGMENTS = (1, 4, 16, 64)
RAG_SAMPLES = 25
# RMT-R reads every past memory state in every segment, so a 1024-segment input costs it ~16x what
# a 256-segment one does (321-349 s of the 1024-segment evaluation on this machine kind, against
# ~40 s for every other row): it is evaluated to 256 segments, where it has already fallen.
LONGEST = {"RMT-R": 256}


@dataclass(frozen=True)
class Recipe:
    """One task of the tables.

    train: TrainConfig fields shared by every row (task, model shape, curriculum, steps, ...).
    rows: row name -> TrainConfig overrides; the row ``"no memory"`` is also the reader of RAG.
    eval_segments: input lengths to evaluate, in segments.
    eval_samples: samples per length: one number, or {segments: samples} naming every length.
    rag: also the RAG row (needs the "no memory" row), at ``rag_segments`` (None: every length)
        with ``rag_samples`` samples (None: as ``eval_samples``) and the top ``rag_top_k`` sentences.
    """

    name: str
    train: dict
    rows: dict
    eval_segments: tuple
    eval_samples: int | dict
    rag: bool = True
    rag_segments: tuple | None = RAG_SEGMENTS
    rag_samples: int | None = RAG_SAMPLES
    rag_top_k: int = 5
    llm: bool = False  # also the LLM row: ``train["model"]`` itself, not fine-tuned (needs a pretrained base)
    diagnose_samples: int = 8  # samples of `rmt diagnose` at the longest length, seed 0 of each memory row
    longest: dict = field(default_factory=dict)  # row -> the longest length it is evaluated at (segments)

    def __post_init__(self):
        def positive(value):
            return isinstance(value, int) and not isinstance(value, bool) and value >= 1

        if not self.rows:
            raise UsageError(f"recipe {self.name}: no rows")
        if not self.eval_segments or not all(positive(n) for n in self.eval_segments):
            raise UsageError(f"recipe {self.name}: eval_segments must be segment counts >= 1, got {self.eval_segments!r}")
        if isinstance(self.eval_samples, dict):
            missing = [n for n in self.eval_segments if n not in self.eval_samples]
            if missing or not all(positive(v) for v in self.eval_samples.values()):
                raise UsageError(f"recipe {self.name}: eval_samples must give samples >= 1 for every length; "
                                 f"missing {missing}" if missing else f"recipe {self.name}: eval_samples must be >= 1")
        elif not positive(self.eval_samples):
            raise UsageError(f"recipe {self.name}: eval_samples must be >= 1, got {self.eval_samples!r}")
        if self.rag and NO_MEMORY not in self.rows:
            raise UsageError(f"recipe {self.name}: rag=True needs the row {NO_MEMORY!r} (its model reads the retrieved text)")
        unknown = [row for row in self.longest if row not in self.row_names]
        if unknown or not all(positive(n) for n in self.longest.values()):
            raise UsageError(f"recipe {self.name}: longest must map rows ({', '.join(self.row_names)}) to segment "
                             f"counts >= 1, got {self.longest!r}")
        if self.llm and not self.train.get("model"):
            raise UsageError(f"recipe {self.name}: llm=True needs a pretrained base model (train['model'])")
        if self.rag_samples is not None and not positive(self.rag_samples):
            raise UsageError(f"recipe {self.name}: rag_samples must be >= 1, got {self.rag_samples!r}")

    def samples_at(self, segments: int, row: str | None = None) -> int:
        if row == RAG and self.rag_samples is not None:
            return self.rag_samples
        return self.eval_samples[segments] if isinstance(self.eval_samples, dict) else self.eval_samples

    def lengths_of(self, row: str) -> tuple:
        lengths = tuple(self.eval_segments)
        if row == RAG and self.rag_segments is not None:
            lengths = tuple(n for n in lengths if n in self.rag_segments)
        return tuple(n for n in lengths if n <= self.longest.get(row, n))

    @property
    def row_names(self) -> list[str]:
        return list(self.rows) + ([RAG] if self.rag else []) + ([LLM] if self.llm else [])

    def trains(self, row: str) -> bool:
        """Whether ``row`` trains a model of its own (RAG reads with the no-memory model, LLM is the base)."""
        return row in self.rows

    def data_row(self, row: str) -> str:
        """The trained row whose settings make ``row``'s evaluation data (every row of a seed reads
        the same stories: the data depends on the task, segment size, seed and tokenizer only)."""
        return row if self.trains(row) else NO_MEMORY if NO_MEMORY in self.rows else next(iter(self.rows))

    def train_config(self, row: str, seed: int, output_dir, threads: int = 1, progress: bool = False):
        """The TrainConfig of ``row`` for ``seed`` (ValueError naming the recipe on a bad setting)."""
        settings = {**self.train, **self.rows[row], "seed": seed, "output_dir": str(output_dir), "threads": threads,
                    "progress": progress}
        try:
            return TrainConfig.from_dict(settings)
        except ValueError as exc:
            raise UsageError(f"recipe {self.name}, row {row}: {exc}") from None


RECIPES = {
    # arXiv 2304.11062, section 4: the fact at the start, at a random place, two facts for one question.
    "memorize": Recipe("memorize", {**SMALL, "task": "memorize"}, ROWS, LONG, LONG_SAMPLES, longest=LONGEST),
    "detect": Recipe("detect", {**SMALL, "task": "detect"}, ROWS, LONG, LONG_SAMPLES, longest=LONGEST),
    "reason": Recipe("reason", {**SMALL, "task": "reason"}, ROWS, LONG, LONG_SAMPLES, longest=LONGEST),
    # bAbI's own story shapes (the simulator's default number of facts per story). No small model
    # trained from scratch here gets past "the last room mentioned" on these (docs/training.md), so
    # they train on 1 -> 2 segments only (half the cost) and show where that plateau sits.
    "qa1": Recipe("qa1", {**SMALL, "task": "qa1", "curriculum": [1, 2]}, ROWS, SHORT, SHORT_SAMPLES),
    "qa2": Recipe("qa2", {**SMALL, "task": "qa2", "curriculum": [1, 2]}, ROWS, SHORT, SHORT_SAMPLES),
}

DEFAULT_RECIPES = tuple(RECIPES)  # what `rmt reproduce` runs without --recipes: the from-scratch tables

# A pretrained base (issue 17): SmolLM2-135M-Instruct fine-tuned with memory on bAbI stories hidden in
# the background books, on inputs of at most 4 segments of 128 tokens (512), evaluated to 128
# segments (16k tokens, 32x). Precision auto (bf16 autocast where native, else fp32); lr 1e-4, batch 8 (the
# papers: 3e-5..1e-4, batch 64). The rows: RMT with gated writes, ARMT, the same model fine-tuned
# without memory (full attention over 512 tokens, the last 512 beyond), RAG with that model as the
# reader, and the base model zero-shot (LLM). Lengths are in the model's tokens.
PRETRAINED = dict(
    model="smollm2-135m", segment_size=128, num_mem_tokens=8, curriculum=[1, 2, 4], stage_steps=50,
    vary_n_segments=True, batch_size=8, lr=1e-4, warmup_steps=10, scheduler="constant", mixed_precision="auto",
    write_gate_bias=1.0, write_sparsity=0.05, eval_every=50, eval_samples=40, eval_batch_size=8, save_every=25,
    log_every=5, gradient_checkpointing=True,
)
# (gradient_checkpointing: full BPTT through 4 segments of this 30-layer model at batch 8 held 17 GB
# and was killed for memory on this 24 GB machine; recomputing each layer's activations held 3.8 GB.)
PRETRAINED_ROWS = {
    "RMT": {"memory_kind": "rmt", "memory_write": "gated"},
    "ARMT": {"memory_kind": "armt"},
    NO_MEMORY: {"memory": False},
}
PRETRAINED_SEGMENTS = (1, 4, 16, 32, 64, 128)  # 128 .. 16k tokens
PRETRAINED_SAMPLES = {1: 100, 4: 100, 16: 100, 32: 100, 64: 50, 128: 50}
# Short stories first for the multi-hop tasks (``warmup_facts``, over the first stage): in context,
# SmolLM2 did not learn qa2 from full stories in 100 steps (0.21-0.26) and did after 150 steps of
# 2-6 facts (0.875 on unseen stories after 150 more of full ones). qa1 learns from full stories;
# qa4 has a fixed shape (2 facts).
PRETRAINED_WARMUP_FACTS = {"qa2": [2, 6], "qa3": [4, 10], "qa5": [4, 8]}
for _task in ("qa1", "qa2", "qa3", "qa4", "qa5"):
    _warmup = {"warmup_facts": PRETRAINED_WARMUP_FACTS[_task], "warmup_facts_steps": PRETRAINED["stage_steps"]} \
        if _task in PRETRAINED_WARMUP_FACTS else {}
    RECIPES[f"smol-{_task}"] = Recipe(f"smol-{_task}", {**PRETRAINED, "task": _task, **_warmup}, PRETRAINED_ROWS,
                                      PRETRAINED_SEGMENTS, PRETRAINED_SAMPLES, rag_segments=(1, 4, 16, 32),
                                      llm=True)

# --quick: the same recipes on a tiny model for a few steps (a smoke test of the machinery).
QUICK_TRAIN = dict(n_layer=1, n_embd=32, n_head=2, segment_size=16, num_mem_tokens=2, curriculum=[1, 2], stage_steps=3,
                   batch_size=4, warmup_steps=0, eval_every=3, eval_samples=4, eval_batch_size=4, save_every=2, log_every=1)


# --quick on a pretrained base: its own shape, a few steps on short segments.
QUICK_PRETRAINED = dict(segment_size=16, num_mem_tokens=2, curriculum=[1, 2], stage_steps=2, batch_size=2,
                        warmup_steps=0, eval_every=2, eval_samples=2, eval_batch_size=2, save_every=2, log_every=1,
                        n_facts=[1, 2], warmup_facts=None, warmup_facts_steps=0)


def quick(recipe: Recipe) -> Recipe:
    settings = QUICK_PRETRAINED if recipe.train.get("model") else QUICK_TRAIN
    return replace(recipe, train={**recipe.train, **settings}, eval_segments=(1, 2, 4), eval_samples=3,
                   rag_segments=(1, 2), rag_samples=2, diagnose_samples=2,
                   longest={row: 2 for row in recipe.longest})
