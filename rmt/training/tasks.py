"""Training tasks: batches of token ids, labels and an answer mask for a given number of segments.

Every batch is a pure function of (seed, split, index, segments): resuming at step k regenerates
exactly the batches an uninterrupted run would have seen, and every data-parallel process builds
the same global batch and takes its own rows.

* ``qa1``..``qa20``: BABILong records from ``rmt.babilong.generate`` (facts hidden in background
  text), then ``input question answer[EOS]``; the loss is on the answer tokens (and EOS) only.
  ``background="none"``: the facts alone (length 0, as ``rmt eval --lengths 0k``).
* ``memorize`` / ``detect`` / ``reason`` (arXiv 2304.11062, section 4): one fact at the start of
  the background, one fact at a random position, or two facts at random positions whose question
  needs both (bAbI qa1 facts for the first two, qa2 facts for the last).
* ``lm``: language modelling on background text; evaluation reports perplexity per segment position.
"""

from __future__ import annotations

import random
import re

import torch

from rmt.babilong import generate
from rmt.babilong.background import get_background
from rmt.babilong.tasks import check_task
from rmt.training.config import BABILONG_TASKS, TrainConfig

_SPACES = re.compile(r"\s+")


def _seed(cfg: TrainConfig, split: str, index: int, segments: int) -> int:
    # Distinct, stable integer seeds for train steps and evaluation sets.
    return random.Random(f"{cfg.seed}:{split}:{index}:{segments}").randrange(2**31)


class TaskData:
    """Builds batches for ``cfg.task`` with ``tokenizer`` (an HF tokenizer)."""

    def __init__(self, cfg: TrainConfig, tokenizer=None):
        self.cfg = cfg
        self.tok = tokenizer
        self.is_qa = cfg.task != "lm"
        if tokenizer is not None:  # None: only `corpus()` (text to train a tokenizer on) is available
            self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
            self.eos_id = tokenizer.eos_token_id
            # The babilong generator counts tokens with the same tokenizer, so lengths come out exact.
            self.counter = getattr(tokenizer, "backend_tokenizer", None) or tokenizer
        if cfg.task in BABILONG_TASKS:
            check_task(cfg.task)

    # ----------------------------------------------------------------- text
    def corpus(self, n: int = 300, seed: int = 0) -> list[str]:
        """Sample texts of this task, to train a local tokenizer on (words of facts, questions, background)."""
        if not self.is_qa:
            return [self._lm_text(random.Random(f"{seed}:corpus:{i}"), 400) for i in range(n)]
        records = self._records(200, n, seed, counter="pretokens")
        return [f"{r['input']} {r['question']} {r['target']}" for r in records]

    def _records(self, length: int, samples: int, seed: int, counter=None, n_facts=None) -> list[dict]:
        task, n_facts = self.cfg.task, n_facts or self.cfg.n_facts
        n_facts = tuple(n_facts) if n_facts is not None else None
        if task in ("memorize", "detect"):
            task, n_facts = "qa1", 1
        elif task == "reason":
            task, n_facts = "qa2", 2
        no_background = self.cfg.background == "none"  # the facts alone: generate's length 0
        # A story too long for the length is redrawn shorter (fewer facts); only one that cannot fit
        # even so (segments smaller than the task's fewest facts) is kept whole, the row then longer.
        records = generate(task=task, length=0 if no_background else max(1, length), samples=samples, seed=seed,
                           background=None if no_background else self.cfg.background,
                           tokenizer=counter or self.counter, n_facts=n_facts, overlong="keep")
        if self.cfg.task == "memorize":  # the fact goes to the very start of the input
            for r in records:
                fact = r["facts"][0]
                r["input"] = _SPACES.sub(" ", fact + " " + r["input"].replace(fact, " ", 1)).strip()
                r["fact_offsets"] = r["supporting_offsets"] = [0]
        return records

    def _lm_text(self, rng: random.Random, n_words: int) -> str:
        sentences, words = [], 0
        for sentence in get_background(self.cfg.background).sentences(rng):
            sentences.append(sentence)
            words += len(sentence.split())
            if words >= n_words:
                break
        return " ".join(sentences)

    # ----------------------------------------------------------------- batches
    def batch(self, split: str, index: int, segments: int, batch_size: int) -> dict:
        """``batch_size`` samples of about ``segments * segment_size`` tokens each (right-padded)."""
        total = segments * self.cfg.rmt.segment_size
        if self.is_qa:
            rows = [(e["ids"], e["n_answer"]) for e in
                    (self.example(r, segments) for r in self.records(split, index, segments, batch_size))]
        else:
            rows = self._lm_rows(total, batch_size, _seed(self.cfg, split, index, segments))
        width = max(len(ids) for ids, _ in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        answer_mask = torch.zeros((len(rows), width), dtype=torch.bool)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (ids, n_answer) in enumerate(rows):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            attention_mask[i, : len(ids)] = 1
            if self.is_qa:
                n_label = n_answer + (1 if self.eos_id is not None else 0)
                labels[i, len(ids) - n_label : len(ids)] = input_ids[i, len(ids) - n_label : len(ids)]
                answer_mask[i, len(ids) - n_label : len(ids) - n_label + n_answer] = True
            else:
                labels[i, : len(ids)] = input_ids[i, : len(ids)]
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels, "answer_mask": answer_mask}

    def _encode(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def records(self, split: str, index: int, segments: int, batch_size: int) -> list[dict]:
        """The BABILong records behind ``batch(split, index, segments, batch_size)`` (QA tasks), as
        ``rmt.babilong.generate`` writes them, lengths counted in this tokenizer's tokens. Sample i
        of a call with more samples is the same record (generation is per sample)."""
        total = segments * self.cfg.rmt.segment_size
        # The first training steps of a story-length curriculum draw shorter stories.
        warmup = split == "train" and index < self.cfg.warmup_facts_steps
        # Ask for a little less than the room left after a typical question and answer (the
        # question and answer come on top; `example` trims background if a row still overflows).
        return self._records(total - 12, batch_size, _seed(self.cfg, split, index, segments),
                             n_facts=self.cfg.warmup_facts if warmup else None)

    def example(self, record: dict, segments: int) -> dict:
        """One record (of ``records(..., segments, ...)``) as the model reads it: ``ids`` = context, question, answer, EOS; ``n_answer``
        answer tokens; ``question_start`` (the context's length in tokens); ``trimmed`` background
        tokens cut from the start so that the row is ~``segments * segment_size`` tokens (never a
        fact); ``fact_tokens``: the token offset of each supporting fact in ``ids``."""
        total = segments * self.cfg.rmt.segment_size
        question = self._encode(" " + record["question"])
        answer = self._encode(" " + str(record["target"]))
        tail = question + answer + ([self.eos_id] if self.eos_id is not None else [])
        context = self._encode(record["input"])
        trimmed = 0
        excess = len(context) + len(tail) - total
        if excess > 0:
            offsets = record.get("fact_offsets") or [0]
            if min(offsets) >= excess:  # background before the first fact can go
                context, trimmed = context[excess:], excess
        supporting = record.get("supporting_offsets") or []
        return {"ids": context + tail, "n_answer": len(answer), "question_start": len(context), "trimmed": trimmed,
                "fact_tokens": [offset - trimmed for offset in supporting]}

    def _lm_rows(self, total: int, batch_size: int, seed: int):
        rows = []
        for i in range(batch_size):
            rng = random.Random(f"{seed}:{i}")
            ids: list[int] = []
            while len(ids) < total:
                ids += self._encode(self._lm_text(rng, total) + " ")
            rows.append((ids[:total], 0))
        return rows


# --------------------------------------------------------------------- metrics
def answer_accuracy(logits: torch.Tensor, input_ids: torch.Tensor, answer_mask: torch.Tensor,
                    positions: torch.Tensor | None = None) -> torch.Tensor:
    """Per row: 1.0 when every answer token is the argmax of the previous position's logits
    (= greedy decoding would produce the answer), else 0.0. Rows without answer tokens count as 0.

    ``logits`` (batch, length, vocab) are those of every position, or, with ``positions`` (1-D),
    those of these positions only (``logits[:, k]`` is position ``positions[k]``'s): they must
    include every position before an answer token; an answer token whose position is missing
    counts as wrong."""
    if positions is None:
        positions = torch.arange(logits.shape[1] - 1, device=logits.device)
        logits = logits[:, :-1]
    inside = positions < input_ids.shape[1] - 1  # the last position predicts nothing here
    positions, logits = positions[inside], logits[:, inside]
    target_mask = answer_mask[:, 1:]  # position t predicts token t + 1
    hits = ~target_mask
    predicted = logits.argmax(-1)
    hits[:, positions] |= predicted == input_ids[:, positions + 1]
    has_answer = target_mask.any(dim=1)
    return (hits.all(dim=1) & has_answer).float()


def segment_losses(logits: torch.Tensor, labels: torch.Tensor, segment_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token loss and token count per segment position (for perplexity by position)."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    loss = torch.nn.functional.cross_entropy(shift_logits.transpose(1, 2), shift_labels, ignore_index=-100,
                                             reduction="none")
    valid = shift_labels != -100
    position = torch.arange(1, labels.shape[1], device=labels.device) // segment_size
    n_seg = int(position.max()) + 1
    sums = torch.zeros(n_seg, dtype=torch.float64).index_add_(0, position.cpu(), (loss * valid).sum(0).double().cpu())
    counts = torch.zeros(n_seg, dtype=torch.float64).index_add_(0, position.cpu(), valid.sum(0).double().cpu())
    return sums, counts
