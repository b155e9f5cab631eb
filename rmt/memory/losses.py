"""The losses of ``RecurrentMemoryTransformer.forward``: HF's causal-LM loss over the whole input
(from all the logits, or from the pieces ``output_logits=False`` computes) and HF's sequence
classification loss, with the label layout helpers they share."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from rmt.errors import UsageError


def joined(pieces) -> torch.Tensor:
    """Decoder logits pieces of consecutive segments as one (batch, positions, vocab) tensor."""
    return pieces[0][1] if len(pieces) == 1 else torch.cat([logits for _, logits in pieces], dim=1)

def next_labels(labels) -> torch.Tensor:
    """What position t's logits predict: label t + 1 (-100 at the last position)."""
    target = torch.full_like(labels, -100)
    target[:, :-1] = labels[:, 1:]
    return target

def first_labelled(labels, lengths, seg: int, n_segments: int) -> list:
    """Per segment, the first position (within it) whose logits a loss on ``labels`` reads, or
    None: position t is read when label t + 1 is not -100 (compact layout; padding ignored)."""
    target = next_labels(labels)
    real = torch.arange(labels.shape[1], device=labels.device)[None, :] + 1 < lengths[:, None]
    read = ((target != -100) & real).any(dim=0).tolist()
    firsts = []
    for s in range(n_segments):
        inside = read[s * seg : (s + 1) * seg]
        firsts.append(inside.index(True) if True in inside else None)
    return firsts

def compact_labels(labels, order, lengths, longest):
    """``labels`` in the compact layout of ``forward`` (each row's real positions first), -100 at padding."""
    if order is None:
        return labels
    labels = labels.gather(1, order)[:, :longest]
    pad = torch.arange(longest, device=labels.device)[None, :] >= lengths[:, None]
    return labels.masked_fill(pad, -100)

def lm_loss(logits, labels):
    """HF causal-LM loss over the whole (compacted) sequence: token t predicts label t+1, across
    segment boundaries; -100 and padding are ignored; mean over all label tokens (0, with no
    gradient, when there is none: a mean over nothing would be NaN)."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    total = F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
                            ignore_index=-100, reduction="sum")
    return total / (shift_labels != -100).sum().clamp(min=1)

def lm_loss_on_pieces(pieces, labels, vocab_size: int):
    """``lm_loss`` from the logits pieces of ``output_logits=False`` (the positions it reads):
    summed piece by piece, each small enough to stay in cache, and divided by the label count
    (no (batch, length, vocab) tensor is joined, shifted or copied)."""
    target = next_labels(labels)
    total, count = None, 0
    for start, logits in pieces:
        t = target[:, start : start + logits.shape[1]]
        keep = t != -100
        n = int(keep.sum())
        if n == 0:
            continue
        rows = logits[keep] if n < keep.numel() else logits.reshape(-1, logits.shape[-1])
        piece = F.cross_entropy(rows.float(), t[keep] if n < keep.numel() else t.reshape(-1), reduction="sum")
        total = piece if total is None else total + piece
        count += n
    if total is None:  # no label at all: 0 (not the NaN of a mean over nothing); backward adds no gradient
        return torch.zeros((), device=labels.device, requires_grad=True)
    return total / count

def classification_loss(problem_type, logits, labels):
    """Same rules as HF's *ForSequenceClassification (``problem_type``: the base config's)."""
    num_labels = logits.shape[-1]
    problem = problem_type
    if problem is None:
        if num_labels == 1:
            problem = "regression"
        elif labels.dtype in (torch.long, torch.int):
            problem = "single_label_classification"
        else:
            problem = "multi_label_classification"
    if problem == "regression":
        return F.mse_loss(logits.squeeze(-1).float(), labels.squeeze(-1).float())
    if problem == "single_label_classification":
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_labels):
            raise UsageError(f"class label outside 0..{num_labels - 1}: got {labels.tolist()}")
        return F.cross_entropy(logits.float().view(-1, num_labels), labels.view(-1))
    return F.binary_cross_entropy_with_logits(logits.float(), labels.float())
