"""One forward pass of a training step on a labelled batch (the logits of the labelled positions
only), and the evaluation that scores a model with it; the no-memory baseline reads the last window
of a longer input."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from rmt.memory import RecurrentMemoryTransformer
from rmt.training.tasks import TaskData, answer_accuracy, segment_losses


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
            sums, counts = segment_losses(out.logits, batch["labels"], data.cfg.rmt.segment_size)
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
