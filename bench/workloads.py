"""What bench/throughput.py and bench/efficiency.py share: the model, the workloads, the reference
loops and the FLOP count. Not a bench itself.

* The model: GPT-2, 4 layers x 256 (4 heads), a 5000-word vocabulary (what `rmt train` builds: its
  default vocabulary size, no dropout), 16 memory tokens, fp32.
* The workloads (issue 12): a training step (forward, backward, AdamW) on a batch of 2 rows of
  16 x 128 or 4 x 512 tokens, with labels on every token (``lm``) or on the last 4 tokens of each
  row only (``qa``, a BABILong answer); streaming 64k tokens in segments of 128 (batch 1).
* The floor any wrapper can reach: a bare loop calling the base model on ``[memory; segment;
  memory]`` and keeping only the memory (training: and the logits of the segment's tokens, the loss
  over all of them), with no checks, no padding support, nothing else.
* The official RMT code (github.com/booydar/recurrent-memory-transformer, ``modeling_rmt/
  language_modeling.py``: ``MemoryCell`` + ``RecurrentWrapper``), loaded from a checkout given on
  the command line; it never enters this repository.
* The FLOP count of a segment (matmuls and attention), nominal and as our code executes it.
"""

from __future__ import annotations

import importlib.util
import math
import statistics
import time
from pathlib import Path

import torch
from torch.nn import functional as F

LAYERS, HIDDEN, HEADS, VOCAB, MEM = 4, 256, 4, 5000, 16
ANSWER_TOKENS = 4  # qa labels: the last tokens of each row
TRAIN = {"train-16x128": (128, 16), "train-4x512": (512, 4)}  # name: (segment size, segments)
TRAIN_BATCH = 2
STREAM_SEGMENT, STREAM_TOKENS = 128, 65536


def build_base(segment: int):
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging

    logging.set_verbosity_error()
    torch.manual_seed(0)
    config = GPT2Config(n_layer=LAYERS, n_head=HEADS, n_embd=HIDDEN, vocab_size=VOCAB, n_positions=segment + 2 * MEM,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config)


def build_ours(base, segment: int, memory_write: str = "replace"):
    from rmt import RMTConfig, RecurrentMemoryTransformer

    torch.manual_seed(1)
    return RecurrentMemoryTransformer.wrap(base, RMTConfig(num_mem_tokens=MEM, segment_size=segment, memory_write=memory_write))


def load_official(checkout: str):
    """``MemoryCell`` and ``RecurrentWrapper`` from a checkout of the official code (only that file is imported)."""
    path = Path(checkout) / "modeling_rmt" / "language_modeling.py"
    if not path.is_file():
        raise SystemExit(f"--official {checkout}: no modeling_rmt/language_modeling.py there (a checkout of "
                         "github.com/booydar/recurrent-memory-transformer is expected)")
    spec = importlib.util.spec_from_file_location("official_rmt_language_modeling", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.MemoryCell, module.RecurrentWrapper


def build_official(module, ours, segment: int, n_segments: int):
    """The official wrapper around the same base model, with our initial memory copied in."""
    memory_cell, recurrent_wrapper = module
    cell = memory_cell(ours.base_model, MEM)
    with torch.no_grad():
        cell.memory.copy_(ours.memory)
    return recurrent_wrapper(cell, segment_size=segment, max_n_segments=n_segments)


def batch(segment: int, n_segments: int, labels: str, batch_size: int = TRAIN_BATCH):
    ids = torch.randint(0, VOCAB, (batch_size, segment * n_segments), generator=torch.Generator().manual_seed(segment))
    if labels == "lm":
        return ids, ids.clone()
    target = torch.full_like(ids, -100)
    target[:, -ANSWER_TOKENS:] = ids[:, -ANSWER_TOKENS:]
    return ids, target


# ------------------------------------------------------------------------------ the floor
def floor_train_loss(base, memory: torch.Tensor, ids: torch.Tensor, labels: torch.Tensor, segment: int) -> torch.Tensor:
    """The bare loop in training: [memory; segment; memory] through the base model, the segment's
    logits kept, the last hidden states at the write positions carried; HF's shifted loss."""
    inner, embed, head = base.transformer, base.get_input_embeddings(), base.get_output_embeddings()
    m = memory.shape[0]
    state = memory[None].expand(ids.shape[0], -1, -1)
    logits = []
    for start in range(0, ids.shape[1], segment):
        x = torch.cat([state, embed(ids[:, start : start + segment]), state], dim=1)
        hidden = inner(inputs_embeds=x, use_cache=False).last_hidden_state
        logits.append(head(hidden[:, m:-m]))
        state = hidden[:, -m:]
    logits = torch.cat(logits, dim=1)
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)


@torch.no_grad()
def floor_stream(base, memory: torch.Tensor, ids: torch.Tensor, segment: int) -> torch.Tensor:
    """The bare loop streaming: only the memory is kept from each segment."""
    inner, embed = base.transformer, base.get_input_embeddings()
    m = memory.shape[0]
    state = memory[None].expand(ids.shape[0], -1, -1)
    for start in range(0, ids.shape[1], segment):
        x = torch.cat([state, embed(ids[:, start : start + segment]), state], dim=1)
        state = inner(inputs_embeds=x, use_cache=False).last_hidden_state[:, -m:]
    return state


@torch.no_grad()
def official_stream(wrapper, ids: torch.Tensor, segment: int) -> torch.Tensor:
    """The official memory cell in a loop (its wrapper has no streaming API)."""
    state = None
    for start in range(0, ids.shape[1], segment):
        _, state = wrapper.memory_cell(ids[:, start : start + segment], memory_state=state)
    return state


@torch.no_grad()
def ours_stream(model, ids: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    return model.stream(ids[:, i : i + chunk] for i in range(0, ids.shape[1], chunk)).memory


def train_step(optimizer, loss_fn, bf16: bool = False):
    """One training step: forward (``loss_fn``; under bf16 autocast with ``bf16``, as accelerate's
    mixed precision runs it), backward, optimizer step. The optimizer has lr=0, so every method of
    every round sees the same weights."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = loss_fn()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def frozen_adamw(module):
    return torch.optim.AdamW(module.parameters(), lr=0.0, weight_decay=0.0)


# ------------------------------------------------------------------------------ FLOPs
def segment_flops(segment: int, logits_rows: int, kept_rows: int | None = None, kept_queries: int | None = None) -> float:
    """Forward FLOPs of one row of one segment [m; segment; m] (T = segment + 2m positions).

    Per layer and position the matmuls take 2 * (3H + H + 4H + 4H) * H = 24 H^2 (GPT-2: qkv,
    attention output, the MLP's two), causal attention 2 * T^2 * H per layer (QK^T and AV over
    the lower triangle), the LM head 2 * H * V per position with logits. ``kept_rows``: the last
    layer's MLP and attention output run on that many rows only (``kept_queries`` attention
    queries), as ours does; None: the nominal count (every layer on every row)."""
    T, H = segment + 2 * MEM, HIDDEN
    per_row = 24 * H * H
    attention = 2 * T * T * H
    flops = LAYERS * (T * per_row + attention) + logits_rows * 2 * H * VOCAB
    if kept_rows is not None:
        rows, queries = kept_rows, kept_queries if kept_queries is not None else T
        last = T * 6 * H * H + rows * 18 * H * H + 4 * queries * T * H  # qkv on all rows; o + MLP on the kept rows
        flops += last - (T * per_row + attention)
    return float(flops)


def stream_flops(executed: bool) -> float:
    """FLOPs of streaming STREAM_TOKENS tokens (no logits; ours keeps the last layer's write rows only)."""
    n = STREAM_TOKENS // STREAM_SEGMENT
    return n * segment_flops(STREAM_SEGMENT, 0, MEM if executed else None, MEM if executed else None)


def train_flops(segment: int, n_segments: int, labels: str, executed: bool) -> float:
    """FLOPs of one training step (forward + backward = 3 x forward) on TRAIN_BATCH rows. Nominal:
    logits for every token of every segment (what the official code and ``output_logits=True`` do).
    Executed with ``output_logits=False``: ``qa`` labels need logits in the last segment only, from
    its first answer position; earlier segments keep only the write rows in the last layer."""
    if not executed or labels == "lm":
        return 3.0 * TRAIN_BATCH * n_segments * segment_flops(segment, segment)
    last_rows = ANSWER_TOKENS + 1  # logits from the position before the first answer token to the segment's end
    return 3.0 * TRAIN_BATCH * ((n_segments - 1) * segment_flops(segment, 0, MEM, MEM)
                                + segment_flops(segment, last_rows, last_rows + MEM, last_rows + MEM))


def matmul_flops_per_second(threads: int, dtype=torch.float32, size: int = 1024, seconds: float = 0.5) -> float:
    """This CPU's matmul rate: a size^3 torch matmul, repeated for ``seconds`` (best of 3 runs)."""
    torch.set_num_threads(threads)
    a = torch.randn(size, size, dtype=dtype)
    b = torch.randn(size, size, dtype=dtype)
    a @ b
    best = math.inf
    for _ in range(3):
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 3:
            a @ b
            n += 1
        best = min(best, (time.perf_counter() - start) / n)
    return 2 * size**3 / best


# ------------------------------------------------------------------------------ timing
def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def median(values) -> float:
    return statistics.median(values)


def load_average() -> str:
    try:
        import os

        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover
        return "n/a"
