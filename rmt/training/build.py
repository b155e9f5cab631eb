"""What a training run trains: its tokenizer and its model (a pretrained base, an RMT checkpoint
trained further, or a small causal LM built from scratch, with or without memory), with the windows
they need."""

from __future__ import annotations

import copy
from pathlib import Path

from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from rmt import runs
from rmt.errors import UsageError
from rmt.memory import RecurrentMemoryTransformer
from rmt.memory.adapters import Adapter
from rmt.memory.config import RMTConfig, memory_kinds
from rmt.memory.lora import BaseReference
from rmt.training.config import TrainConfig, memory_options
from rmt.training.tasks import TaskData
from rmt.training.tokenizer import train_word_tokenizer


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
    return cfg.max_segments * cfg.rmt.segment_size


def build_base_model(cfg: TrainConfig, tokenizer, n_positions: int):
    """An HF causal LM: ``cfg.model`` from the hub / a path, or a small one built from scratch
    (``scratch_causal_lm``: ``cfg.arch`` with ``n_layer`` / ``n_embd`` / ``n_head``)."""
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
    return scratch_causal_lm(cfg.arch, len(tokenizer), cfg.n_embd, cfg.n_layer, cfg.n_head, n_positions,
                             bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id)


def scratch_causal_lm(arch: str, vocab_size: int, hidden: int, layers: int, heads: int, n_positions: int, **token_ids):
    """A small causal LM with fresh weights (drawn from torch's RNG, so a seed fixes them), without
    dropout: ``arch`` ``gpt2`` (a learned table of ``n_positions`` positions) or ``llama`` (rotary
    positions; ``n_positions`` is its ``max_position_embeddings``). ``token_ids``: its config's
    ``bos_token_id`` / ``eos_token_id`` / ``pad_token_id``. ``segment_positions`` sizes
    ``n_positions`` for an ``RMTConfig``. What ``rmt train`` (no ``--model``) and ``rmt demo`` build."""
    if arch == "llama":
        config = LlamaConfig(
            vocab_size=vocab_size, hidden_size=hidden, intermediate_size=4 * hidden,
            num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
            max_position_embeddings=n_positions, tie_word_embeddings=True, **token_ids,
        )
        return causal_lm_loss(LlamaForCausalLM(config))
    if arch == "gpt2":
        config = GPT2Config(vocab_size=vocab_size, n_positions=n_positions, n_embd=hidden, n_layer=layers, n_head=heads,
                            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **token_ids)
        return causal_lm_loss(GPT2LMHeadModel(config))
    raise UsageError(f"unknown arch {arch!r}; allowed: gpt2, llama")


def segment_positions(config: RMTConfig, arch: str, hidden: int, vocab_size: int) -> int:
    """Positions one segment pass of ``config`` takes in a causal LM of ``arch`` built from scratch:
    ``segment_size`` tokens plus what the memory kind adds (``MemoryKind.extra_positions``)."""
    decoder = Adapter(kind="decoder", model_type=arch, hidden_size=hidden, vocab_size=vocab_size, max_positions=None)
    return config.segment_size + memory_kinds()[config.memory_kind].extra_positions(decoder, config)


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
    differ = [name for name in names if getattr(saved, name) != getattr(cfg.rmt, name)]
    if differ:
        wanted = " ".join(f"--{n.replace('_', '-')} {getattr(saved, n)}" for n in differ)
        now = ", ".join(f"{n}={getattr(cfg.rmt, n)!r}" for n in differ)
        raise UsageError(f"--model {cfg.model} is an RMT checkpoint trained with other memory settings (this run has "
                         f"{now}); continue it with: {wanted}")
    vocab = model.base_model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > vocab:
        raise UsageError(f"--tokenizer {cfg.tokenizer} has {len(tokenizer)} tokens, more than the {vocab} embeddings of "
                         f"the RMT checkpoint {path}; leave out --tokenizer to use the checkpoint's own")
    saved.bptt_depth = cfg.rmt.bptt_depth  # how far gradients flow is a training setting, not part of the model (checked: RMTConfig)
    model.train()
    return model


def segment_window(cfg: TrainConfig) -> int:
    """Positions one segment pass takes in a base model built from scratch (``segment_positions``).
    Never fewer than the ``segment_size + 2 * num_mem_tokens`` earlier versions gave every kind: the
    position table is drawn at random first, so a smaller one would change every later weight of a
    seeded run (ARMT uses only ``num_mem_tokens`` extra positions) and its checkpoints would not resume."""
    return max(segment_positions(cfg.rmt, cfg.arch, cfg.n_embd, cfg.vocab_size),
               cfg.rmt.segment_size + 2 * cfg.rmt.num_mem_tokens)


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
