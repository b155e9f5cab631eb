"""The training loop (nanoGPT-like, on ``accelerate``): curriculum stages, periodic evaluation,
atomic checkpoints, exact resume, JSONL metrics.

The same code runs on CPU, one GPU, or many (``accelerate launch`` with a DDP, DeepSpeed or FSDP
config): every process builds the same global batch for a step and trains on its own rows.
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import NamedTuple

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from tqdm.auto import tqdm
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from rmt import runs
from rmt.atomic import atomic_dir, atomic_file
from rmt.errors import UsageError
from rmt.memory import RecurrentMemoryTransformer
from rmt.memory.adapters import Adapter
from rmt.memory.config import memory_kinds
from rmt.memory.lora import BaseReference
from rmt.outputs import check_output
from rmt.runs import METRICS_FILE as METRICS_NAME, TRAIN_CONFIG_FILE as CONFIG_NAME  # the names it had here
from rmt.threads import set_threads
from rmt.training import checkpoint as ckpt
from rmt.training.config import TrainConfig, memory_options
from rmt.training.curriculum import Curriculum
from rmt.training.tasks import TaskData, answer_accuracy, segment_losses
from rmt.training.tokenizer import train_word_tokenizer


# --------------------------------------------------------------------- building blocks
def check_output_dir(path, flag: str = "--output-dir") -> Path:
    """The output rule (``rmt.outputs``) for a run directory, then create it."""
    path = check_output(path, flag, kind="dir")
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_tokenizer(cfg: TrainConfig):
    """The configured HF tokenizer; else the tokenizer saved with the model given as ``--model`` (a
    pretrained model's or an RMT checkpoint's: its embeddings were trained for it); else (a model
    built from scratch) a word-level one trained on this task's text."""
    if cfg.tokenizer:
        return runs.load_tokenizer(runs.locate(cfg.tokenizer).where, what="tokenizer")
    if cfg.model:
        return runs.load_tokenizer(runs.locate(cfg.model).where, what="tokenizer")
    return train_word_tokenizer(TaskData(cfg).corpus(seed=cfg.seed), cfg.vocab_size)


def window_of(cfg: TrainConfig) -> int:
    """Tokens the no-memory baseline attends over: the longest training input."""
    return cfg.max_segments * cfg.segment_size


def build_base_model(cfg: TrainConfig, tokenizer, n_positions: int):
    """An HF causal LM: ``cfg.model`` from the hub / a path, or a small GPT-2 built from scratch."""
    if cfg.model:
        # a registered name is fetched and converted once; no hub: fails at once
        model = runs.load_causal_lm(runs.locate(cfg.model).where)
        if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
            if cfg.lora_rank:
                raise UsageError(f"--lora-rank {cfg.lora_rank}: the tokenizer has {len(tokenizer)} tokens, more than the "
                                 f"{model.get_input_embeddings().weight.shape[0]} embeddings of --model {cfg.model}; adapters "
                                 f"keep the embeddings frozen, so the new tokens would stay untrained")
            model.resize_token_embeddings(len(tokenizer))
        return causal_lm_loss(model)
    if cfg.arch == "llama":
        config = LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=cfg.n_embd, intermediate_size=4 * cfg.n_embd,
            num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head, num_key_value_heads=cfg.n_head,
            max_position_embeddings=n_positions, tie_word_embeddings=True,
            bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        )
        return causal_lm_loss(LlamaForCausalLM(config))
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=n_positions, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
        n_head=cfg.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    return causal_lm_loss(GPT2LMHeadModel(config))


def causal_lm_loss(model):
    """Name the loss HF already falls back to for classes it cannot infer it from (GPT2LMHeadModel):
    the same loss, without a "`loss_type=None` ... unrecognized" warning in every training's output."""
    if getattr(model, "loss_type", None) is None:
        model.loss_type = "ForCausalLM"
    return model


def load_rmt_checkpoint(cfg: TrainConfig, path: Path, tokenizer):
    """The RMT checkpoint ``path`` (``--model``) to train further: its base model, memory and
    retrieval weights as saved. Its memory settings are part of the weights, so the run must name
    the same ones (a clear error otherwise, never a silently re-initialised model)."""
    if not cfg.memory:
        raise UsageError(f"--model {cfg.model} is an RMT checkpoint (a model with memory); --no-memory trains a plain "
                         f"base model: give an HF model, or leave out --no-memory")
    model = RecurrentMemoryTransformer.from_pretrained(path, merge_adapters=False)
    if model.lora != cfg.lora:
        saved_lora = model.lora
        wanted = (f"--lora-rank {saved_lora.rank} --lora-alpha {saved_lora.alpha:g} --lora-dropout {saved_lora.dropout:g}"
                  + (f" --lora-targets {','.join(saved_lora.targets)}" if saved_lora.targets else "")) if saved_lora else "--lora-rank 0"
        raise UsageError(f"--model {cfg.model} is an RMT checkpoint {'with other LoRA adapters' if saved_lora else 'without adapters'} "
                         f"than this run's (lora_rank={cfg.lora_rank}); continue it with: {wanted}")
    saved = model.config
    # Every memory setting but how far gradients flow (a training setting) and the old spelling.
    names = [o.name for o in memory_options() if o.name not in ("bptt_depth", "self_retrieval")]
    differ = [name for name in names if getattr(saved, name) != getattr(cfg, name)]
    if differ:
        wanted = " ".join(f"--{n.replace('_', '-')} {getattr(saved, n)}" for n in differ)
        now = ", ".join(f"{n}={getattr(cfg, n)!r}" for n in differ)
        raise UsageError(f"--model {cfg.model} is an RMT checkpoint trained with other memory settings (this run has "
                         f"{now}); continue it with: {wanted}")
    vocab = model.base_model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > vocab:
        raise UsageError(f"--tokenizer {cfg.tokenizer} has {len(tokenizer)} tokens, more than the {vocab} embeddings of "
                         f"the RMT checkpoint {path}; leave out --tokenizer to use the checkpoint's own")
    saved.bptt_depth = cfg.bptt_depth  # how far gradients flow is a training setting, not part of the model
    model.train()
    return model


def segment_window(cfg: TrainConfig) -> int:
    """Positions one segment pass takes in a base model built from scratch: its tokens and what the
    memory kind adds (``MemoryKind.extra_positions``; training builds causal LMs). Never fewer than
    the ``segment_size + 2 * num_mem_tokens`` earlier versions gave every kind: the position table
    is drawn at random first, so a smaller one would change every later weight of a seeded run
    (ARMT uses only ``num_mem_tokens`` extra positions) and its checkpoints would not resume."""
    decoder = Adapter(kind="decoder", model_type=cfg.arch, hidden_size=cfg.n_embd, vocab_size=cfg.vocab_size, max_positions=None)
    extra = memory_kinds()[cfg.memory_kind].extra_positions(decoder, cfg.rmt)
    return cfg.segment_size + max(extra, 2 * cfg.num_mem_tokens)


def build_model(cfg: TrainConfig, tokenizer):
    """RMT around the base model, or (``memory=False``) the bare base model with a full-attention
    window as long as the longest training input. An RMT checkpoint as ``cfg.model`` is trained
    further as it is."""
    checkpoint = runs.rmt_checkpoint_of(cfg.model)
    if checkpoint is not None:
        return load_rmt_checkpoint(cfg, checkpoint, tokenizer)
    if not cfg.memory:
        return build_base_model(cfg, tokenizer, window_of(cfg))

    base = build_base_model(cfg, tokenizer, segment_window(cfg))
    if cfg.lora is None:
        return RecurrentMemoryTransformer.wrap(base, copy.copy(cfg.rmt))
    return RecurrentMemoryTransformer.wrap(base, copy.copy(cfg.rmt), lora=cfg.lora, base=BaseReference.of(cfg.model))


def enable_gradient_checkpointing(model) -> None:
    """Activation checkpointing of every decoder layer (``--gradient-checkpointing``): HF's own, on
    the base model. The segment loop calls the HF layers one by one (``adapters.DecoderLayers``),
    and each layer checkpoints itself while training, so this covers every kind and the no-memory
    baseline alike; gradients equal those without it (tested)."""
    base = model.base_model if isinstance(model, RecurrentMemoryTransformer) else model
    if not getattr(base, "supports_gradient_checkpointing", False):
        raise UsageError(f"--gradient-checkpointing: {type(base).__name__} does not support activation checkpointing")
    base.activation_checkpointing_enable()


def model_window(model) -> int | None:
    """The longest input a model takes: None (unbounded) for RMT, else its position limit."""
    if isinstance(model, RecurrentMemoryTransformer):
        return None
    return getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)


def last_window(batch: dict, window: int | None) -> dict:
    """Each row cut to its last ``window`` real tokens (truncation on the left, as LLM evaluations
    read an input longer than their context), right-padded again; rows that fit are unchanged.

    Rows are right-padded, so a row's last tokens are not the batch's last columns: each row is cut
    at its own end. The question and answer sit at the end, so they are always kept."""
    if window is None or int(batch["attention_mask"].sum(dim=1).max()) <= window:
        return batch
    lengths = batch["attention_mask"].sum(dim=1)
    starts = (lengths - window).clamp(min=0)
    width = int((lengths - starts).max())
    index = (starts[:, None] + torch.arange(width, device=starts.device)[None, :]).clamp(max=batch["input_ids"].shape[1] - 1)
    kept = torch.arange(width, device=starts.device)[None, :] < (lengths - starts)[:, None]
    out = {}
    for key, value in batch.items():
        cut = value.gather(1, index)
        fill = {"labels": -100, "input_ids": 0}.get(key, 0)
        out[key] = torch.where(kept, cut, torch.full_like(cut, fill))
    return out


class StepOutput(NamedTuple):
    """What a forward pass on a labelled batch gives: the loss, the logits (batch, k, vocab) of the
    positions ``positions`` (k,) only (those before a label; None when there is none), and the
    write rate of gated writes (else None)."""

    loss: torch.Tensor
    logits: torch.Tensor | None
    positions: torch.Tensor | None
    write_rate: torch.Tensor | None = None


def labelled_logits(model, batch: dict) -> StepOutput:
    """A causal LM (no memory) run on ``batch`` computing the output layer only at the positions
    before a label (HF's ``logits_to_keep``).
    The loss is HF's (mean over label tokens) up to the order of its sum. Answers are a few tokens
    at the end, so this skips the output layer (49k x 576 for SmolLM2, a fifth of its forward
    pass) almost everywhere, and never holds a (batch, length, vocab) tensor, which at 8k tokens
    of a 49k vocabulary and batch 8 is 13 GB."""
    labels = batch["labels"]
    positions = (labels[:, 1:] != -100).any(dim=0).nonzero().flatten()
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=positions)
    target = labels[:, positions + 1]
    keep = target != -100
    if not bool(keep.any()):  # no label at all: 0 with no gradient (a mean over nothing is NaN)
        return StepOutput(out.logits.sum() * 0.0, out.logits, positions)
    loss = torch.nn.functional.cross_entropy(out.logits[keep].float(), target[keep])
    return StepOutput(loss, out.logits, positions)


def forward(model, batch: dict, window: int | None, memory: bool) -> StepOutput:
    """A training step's forward pass, with the logits of the positions before a label only
    (``StepOutput``). A model with memory runs with
    ``output_logits=False`` (it skips the output layer almost everywhere, 1.6-1.7x the tokens/s in
    bench/throughput.py; the loss equals the full one up to the order of its sum); a model without
    memory reads the last ``window`` tokens (``labelled_logits``)."""
    if memory:
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"],
                    output_logits=False)
        pieces = out.label_logits or ()
        if not pieces:
            return StepOutput(out.loss, None, None, out.write_rate)
        positions = torch.cat([torch.arange(start, start + piece.shape[1], device=piece.device) for start, piece in pieces])
        logits = pieces[0][1] if len(pieces) == 1 else torch.cat([piece for _, piece in pieces], dim=1)
        return StepOutput(out.loss, logits, positions, out.write_rate)
    return labelled_logits(model, last_window(batch, window))


@torch.no_grad()
def evaluate(model, data: TaskData, segments: int, samples: int, batch_size: int = 50, window: int | None = None,
             device=None) -> dict:
    """Accuracy (QA tasks) or perplexity per segment position (lm) on the fixed evaluation set for
    ``segments``. A model with a ``window`` reads the last ``window`` tokens of each longer input
    (``last_window``); ``result["truncated"]`` says whether any input was cut. QA answers are
    scored from the logits before each answer token only (``forward``), so any length fits in memory."""
    was_training = model.training
    model.eval()
    memory = isinstance(model, RecurrentMemoryTransformer)
    correct, loss_sum, count = 0.0, 0.0, 0
    seg_sums = seg_counts = None
    truncated = False
    for index, start in enumerate(range(0, samples, batch_size)):
        n = min(batch_size, samples - start)
        batch = data.batch("eval", index, segments, n)
        if device is not None:
            batch = {k: v.to(device) for k, v in batch.items()}
        read = last_window(batch, window)  # the batch itself when every row fits
        truncated = truncated or read is not batch
        batch = read
        if data.is_qa:
            out = forward(model, batch, None, memory)
            loss = out.loss
            if out.logits is not None:
                correct += float(answer_accuracy(out.logits, batch["input_ids"], batch["answer_mask"], out.positions).sum())
        else:
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
            loss = out.loss
            sums, counts = segment_losses(out.logits, batch["labels"], data.cfg.segment_size)
            seg_sums = sums if seg_sums is None else seg_sums + sums
            seg_counts = counts if seg_counts is None else seg_counts + counts
        loss_sum += float(loss) * n
        count += n
    model.train(was_training)
    result = {"segments": segments, "samples": count, "loss": loss_sum / count, "truncated": truncated}
    if data.is_qa:
        result["accuracy"] = correct / count
    else:
        result["perplexity"] = math.exp(loss_sum / count)
        result["perplexity_by_segment"] = [round(math.exp(s / c), 4) for s, c in zip(seg_sums.tolist(), seg_counts.tolist()) if c]
    return result


def param_groups(model, weight_decay: float, memory_lr: float | None = None) -> list[dict]:
    """Weight decay on matrices only (as nanoGPT / HF do): decaying norm gains would shrink the
    final norm that produces each new memory state, and the memory itself is state, not a weight.
    (ARMT's ``b_gate`` is 2-D only because it stacks one bias per layer.)

    ``memory_lr``: the parameters the memory adds (``memory_kind.*``: memory tokens, write gate,
    ARMT's projections) get their own learning rate, in two more groups; the base model keeps the
    optimizer's. New parameters beside a pretrained model start from scratch, where the base model
    only needs a nudge (the way adapters are trained at a higher rate). None: one rate for all,
    and the two groups of before (so earlier checkpoints' optimizer states still load)."""
    groups = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decays = p.dim() >= 2 and not name.endswith(("memory", "b_gate"))
        own = memory_lr is not None and name.startswith("memory_kind.")
        groups.setdefault((own, decays), []).append(p)
    out = []
    for own in (False, True) if memory_lr is not None else (False,):
        for decays in (True, False):
            group = {"params": groups.get((own, decays), []), "weight_decay": weight_decay if decays else 0.0}
            if own:
                group["lr"] = memory_lr
            out.append(group)
    return out


def make_scheduler(optimizer, cfg: TrainConfig):
    total, warmup = cfg.total_steps, cfg.warmup_steps

    def factor(step):
        if warmup and step < warmup:
            return (step + 1) / warmup
        if cfg.scheduler == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 1.0 - progress if cfg.scheduler == "linear" else 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class MetricsLog:
    """Append-only JSONL (one object per line); on resume, lines after the checkpoint are dropped so
    the file reads as if the run had never stopped."""

    def __init__(self, path: Path, enabled: bool, tensorboard_dir: Path | None = None):
        self.path, self.enabled = path, enabled
        self.tb = None
        if enabled and tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter  # lazy: the `tensorboard` extra
            except ImportError:
                raise UsageError("--tensorboard needs the tensorboard package: pip install 'rmt[tensorboard]'") from None
            self.tb = SummaryWriter(str(tensorboard_dir))

    def truncate_after(self, step: int) -> None:
        if not self.enabled or not self.path.exists():
            return
        kept = []
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        for number, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
                record_step = record["step"]
            except (ValueError, UnicodeDecodeError, KeyError, TypeError):
                if number == len(lines):  # no newline after it: a kill cut the last append short
                    continue
                raise UsageError(f"{self.path}, line {number}: not a metrics record (a JSON object with a step); "
                                 f"remove the line to resume") from None
            if record_step <= step:
                kept.append(raw.decode("utf-8"))
        atomic_file(self.path, lambda tmp: Path(tmp).write_text("".join(line + "\n" for line in kept)))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step":
                    self.tb.add_scalar(f"{record['type']}/{key}", value, record["step"])

    def close(self):
        if self.tb is not None:
            self.tb.close()


def _forget_other_precision(mixed_precision: str) -> None:
    """accelerate keeps one process-wide state, and refuses an ``Accelerator`` with another mixed
    precision than the first one of the process had. In one process (no launcher) that state is
    only an earlier run's, e.g. an fp32 run before a bf16 one in the same Python session: drop it
    so this run gets the precision it asks for. (Under a launcher every process runs one training.)"""
    shared = AcceleratorState._shared_state
    earlier = shared.get("_mixed_precision")
    if earlier is not None and earlier != mixed_precision and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        AcceleratorState._reset_state()


def native_bf16(cuda: bool) -> bool:
    """Whether bf16 matrix products are native here: a CUDA device that supports bf16, or a CPU
    with AVX512-BF16 or AMX-BF16 (read from Linux's /proc/cpuinfo; elsewhere: no)."""
    if cuda:
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_mixed_precision(cfg: TrainConfig, cuda: bool) -> tuple[str, str]:
    """``cfg.mixed_precision`` with ``auto`` decided, and why. ``auto`` is bf16 autocast for a
    pretrained ``--model`` where bf16 is native: on SmolLM2-135M on a CPU with AVX512-BF16 a step
    took 0.44x the fp32 step with loss curves within fp32's own noise (bench/train_precision.py);
    on an AVX2-only CPU of the same machine kind, bf16 products ran at 0.03x fp32
    (bench/matmul_precision.py), so there it is fp32. Models trained from scratch stay fp32: they are small (a step is
    overhead, not matrix products) and the reproduce recipes' numbers were measured in fp32."""
    if cfg.mixed_precision != "auto":
        return cfg.mixed_precision, "asked"
    if cfg.model is None:
        return "no", "auto: a model trained from scratch stays fp32"
    if not native_bf16(cuda):
        return "no", f"auto: no native bf16 on this {'GPU' if cuda else 'CPU'}"
    return "bf16", f"auto: a pretrained model on a {'GPU' if cuda else 'CPU'} with native bf16"


# --------------------------------------------------------------------- the loop
class Trainer:
    """``Trainer(cfg, resume=False).train()``; see ``docs/training.md``."""

    def __init__(self, cfg: TrainConfig, resume: bool = False, accelerator=None, tokenizer=None):
        self.cfg = cfg
        self.threads = set_threads(cfg.threads)  # None: one per core not already busy (rmt.threads)
        # Launched as several processes (torchrun / accelerate launch) on a machine without CUDA:
        # tell accelerate to run data-parallel on CPU (gloo); it only does so when asked.
        cpu_ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
        if accelerator is not None:  # the caller's accelerator decides
            cfg.mixed_precision = accelerator.mixed_precision
        else:
            cfg.mixed_precision, why = resolve_mixed_precision(cfg, torch.cuda.is_available())
            _forget_other_precision(cfg.mixed_precision)
        self.accelerator = accelerator or Accelerator(mixed_precision=cfg.mixed_precision, cpu=cpu_ddp)
        self.out = Path(cfg.output_dir)
        # Read-only checks first (every process, same answer): a run that cannot start leaves
        # nothing behind. The output dir is created once the model is built.
        self.resume_from = self._check_output_dir(resume)

        torch.manual_seed(cfg.seed)
        if self.resume_from is not None:
            self.tokenizer = runs.load_tokenizer(self.resume_from)
        else:
            self.tokenizer = tokenizer if tokenizer is not None else build_tokenizer(cfg)
        self.data = TaskData(cfg, self.tokenizer)
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg, self.tokenizer)
        if cfg.gradient_checkpointing:
            enable_gradient_checkpointing(self.model)
        self.window = model_window(self.model)
        self.optimizer = torch.optim.AdamW(param_groups(self.model, cfg.weight_decay, cfg.memory_lr), lr=cfg.lr)
        # The scheduler is stepped by hand once per optimizer step (accelerate's wrapper would step
        # it once per process), so the learning rate does not depend on the number of processes.
        self.scheduler = make_scheduler(self.optimizer, cfg)
        self.curriculum = Curriculum(cfg.curriculum, cfg.stage_steps, cfg.stage_threshold, cfg.vary_n_segments, cfg.seed)
        self.step = 0
        self._last_save = time.monotonic()
        self.history: list[dict] = []
        if self.resume_from is not None:
            state = ckpt.load_checkpoint(self.resume_from, self.model, self.optimizer, self.scheduler)
            self.step = state["step"]
            self.curriculum.load_state_dict(state["curriculum"])
            self.history = state.get("history", [])
        self.model, self.optimizer = self.accelerator.prepare(self.model, self.optimizer)
        if self.accelerator.is_main_process:
            self._create_output_dir()
            if accelerator is None and why != "asked" and cfg.model is not None:  # said once the run starts
                print(f"mixed precision: {'bf16 autocast' if cfg.mixed_precision == 'bf16' else 'fp32'} ({why}; "
                      f"--mixed-precision no|bf16 to choose)", file=sys.stderr)
        self.accelerator.wait_for_everyone()
        self.metrics = MetricsLog(self.out / METRICS_NAME, self.accelerator.is_main_process,
                                  self.out / runs.TENSORBOARD_DIR if cfg.tensorboard else None)
        if self.resume_from is not None:
            self.metrics.truncate_after(self.step)

    def _check_output_dir(self, resume: bool) -> Path | None:
        """Check the output dir without writing to it; return the checkpoint to resume from."""
        check_output(self.out, "--output-dir", kind="dir")
        main = self.accelerator.is_main_process
        if resume:
            existing = ckpt.resumable_checkpoint(self.out, log=(lambda line: print(line, file=sys.stderr)) if main else None)
            if existing is None:
                raise FileNotFoundError(f"--resume: no checkpoint in {self.out / runs.CHECKPOINTS_DIR}; start without --resume")
            other = TrainConfig.from_file(existing / CONFIG_NAME)
            diff = self.cfg.resume_mismatch(other)
            if diff:
                shown = ", ".join(f"{k}={getattr(other, k)!r} (now {getattr(self.cfg, k)!r})" for k in diff)
                raise UsageError(f"--resume: {self.out} holds a run with another config: {shown}; "
                                 f"use the same settings or another output dir")
            return existing
        if ckpt.latest_checkpoint(self.out) is not None or (self.out / METRICS_NAME).exists():
            raise FileExistsError(f"output dir {str(self.out)!r} already holds a run; pass --resume to continue it "
                                  f"or choose another output dir (nothing is overwritten)")
        return None

    def _create_output_dir(self) -> None:
        check_output_dir(self.out)
        ckpt.sweep_temp_dirs(self.out)
        atomic_file(self.out / CONFIG_NAME, self.cfg.save)

    # ------------------------------------------------------------------ helpers
    def _local_rows(self, batch: dict) -> dict:
        """This process's share of the global batch (contiguous rows)."""
        n, world, rank = batch["input_ids"].shape[0], self.accelerator.num_processes, self.accelerator.process_index
        if n % world:
            raise UsageError(f"batch_size={n} must be divisible by the number of processes ({world})")
        per = n // world
        return {k: v[rank * per : (rank + 1) * per].to(self.accelerator.device) for k, v in batch.items()}

    def _state(self) -> dict:
        return {"step": self.step, "curriculum": self.curriculum.state_dict(), "history": self.history}

    def _accumulate(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Forward and backward over ``batch`` in ``grad_accum`` micro-batches, leaving the
        gradient of the whole batch: each micro-batch's loss (a mean over its answer tokens) is
        weighted by its share of the batch's answer tokens, so the sum is the batch's mean.
        Returns the batch's loss and gated writes' write rate (None without them), detached."""
        cfg, acc = self.cfg, self.accelerator
        n = batch["input_ids"].shape[0]
        size = -(-n // cfg.grad_accum)
        pieces = [{k: v[i : i + size] for k, v in batch.items()} for i in range(0, n, size)]
        counts = [int((piece["labels"][:, 1:] != -100).sum()) for piece in pieces]
        total = sum(counts)
        loss_sum, rate_sum = torch.zeros((), device=acc.device), None
        for piece, count in zip(pieces, counts):
            weight = count / total if total else 1 / len(pieces)
            out = forward(self.model, piece, self.window, cfg.memory)
            acc.backward(out.loss * weight)
            loss_sum += out.loss.detach().float() * weight
            if out.write_rate is not None:  # gated writes: how much memory this step rewrote
                rate = out.write_rate.detach().float() * weight
                rate_sum = rate if rate_sum is None else rate_sum + rate
        return loss_sum, rate_sum

    def _save_due(self) -> bool:
        """Whether ``save_every_minutes`` of wall time have passed since the last checkpoint (every
        process decides as the main one does, so all of them save together)."""
        if self.cfg.save_every_minutes is None:
            return False
        due = time.monotonic() - self._last_save >= 60 * self.cfg.save_every_minutes
        if self.accelerator.num_processes > 1:
            due = bool(self.accelerator.reduce(torch.tensor(float(due), device=self.accelerator.device), reduction="sum") > 0)
        return due

    def save(self) -> Path | None:
        self._last_save = time.monotonic()
        path = None
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            path = ckpt.save_checkpoint(self.out, self.step, self.accelerator.unwrap_model(self.model), self.tokenizer,
                                        self.optimizer, self.scheduler, self._state(), self.cfg)
        self.accelerator.wait_for_everyone()
        return path

    def evaluate(self, segments: int, samples: int | None = None) -> dict | None:
        return evaluate(self.accelerator.unwrap_model(self.model), self.data, segments, samples or self.cfg.eval_samples,
                        self.cfg.eval_batch_size, self.window, self.accelerator.device)

    # ------------------------------------------------------------------ train
    def train(self, stop_after: int | None = None) -> dict:
        """Run the curriculum to the end (or ``stop_after`` more steps); returns a summary and
        writes ``OUT/final`` when the curriculum is done."""
        cfg, acc = self.cfg, self.accelerator
        bar = tqdm(total=cfg.total_steps, initial=self.step, desc="train", unit="step",
                   disable=not (cfg.progress and acc.is_main_process), dynamic_ncols=True)
        done_here = 0
        # Seconds per optimizer step (batch, forward, backward, update; not evaluation or saving),
        # averaged over the steps since the last train record.
        step_seconds, timed_steps = 0.0, 0
        self.model.train()
        while not self.curriculum.finished and (stop_after is None or done_here < stop_after):
            started = time.perf_counter()
            segments = self.curriculum.segments_for_step(self.step)
            batch = self._local_rows(self.data.batch("train", self.step, segments, cfg.batch_size * cfg.grad_accum))
            loss_sum, write_rate = self._accumulate(batch)
            if cfg.grad_clip:
                acc.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            done_here += 1
            loss = float(acc.reduce(loss_sum, reduction="mean"))
            seconds = time.perf_counter() - started
            step_seconds, timed_steps = step_seconds + seconds, timed_steps + 1
            bar.update(1)
            bar.set_postfix(stage=self.curriculum.segments, loss=f"{loss:.3f}", s_per_step=f"{seconds:.2f}")
            if self.step % cfg.log_every == 0 or self.step == 1:
                self.metrics.write({"type": "train", "step": self.step, "stage": self.curriculum.stage,
                                    "stage_segments": self.curriculum.segments, "segments": segments,
                                    "loss": loss, "lr": self.scheduler.get_last_lr()[0], "processes": acc.num_processes,
                                    "seconds_per_step": round(step_seconds / timed_steps, 4),
                                    **({"write_rate": round(float(write_rate.detach()), 6)} if write_rate is not None else {})})
                step_seconds, timed_steps = 0.0, 0
            stage_ends = self.step - self.curriculum.stage_start >= cfg.stage_steps
            result = None
            if self.step % cfg.eval_every == 0 or stage_ends:
                result = self.evaluate(self.curriculum.segments)
                record = {"type": "eval", "step": self.step, "stage": self.curriculum.stage, **result}
                self.metrics.write(record)
                self.history.append(record)
            stage = self.curriculum.stage
            moved = self.curriculum.advance(self.step, result.get("accuracy") if result else None)
            if moved:
                self.metrics.write({"type": "stage", "step": self.step, "finished_stage": stage,
                                    "segments": cfg.curriculum[stage]})
                if not self.curriculum.finished:
                    bar.total = self.step + cfg.stage_steps * (len(cfg.curriculum) - self.curriculum.stage)
                    bar.refresh()
            if self.step % cfg.save_every == 0 or (moved and self.curriculum.finished) or self._save_due():
                self.save()
        bar.close()
        final = None
        if self.curriculum.finished:
            final = self.out / runs.FINAL_DIR
            acc.wait_for_everyone()
            if acc.is_main_process:
                model = acc.unwrap_model(self.model)
                atomic_dir(final, lambda tmp: ckpt.save_model_dir(tmp, model, self.tokenizer))
            acc.wait_for_everyone()
        self.metrics.close()
        return {"step": self.step, "finished": self.curriculum.finished, "final": str(final) if final else None,
                "history": self.history}
