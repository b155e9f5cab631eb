"""Tokenizers for training: any HF tokenizer by name/path, or a word-level one trained locally.

The local tokenizer is what lets the quickstart run offline: a ``tokenizers`` WordLevel model
trained on the task's own text (the bAbI words and the background prose), wrapped as a
``PreTrainedTokenizerFast`` so that ``save_pretrained`` / ``AutoTokenizer.from_pretrained`` work
exactly as for a hub tokenizer.
"""

from __future__ import annotations

from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from rmt import runs

PAD, UNK, EOS = "[PAD]", "[UNK]", "[EOS]"


def train_word_tokenizer(texts: Iterable[str], vocab_size: int = 5000):
    """A word-level tokenizer (words and punctuation marks) trained on ``texts``."""
    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    # Words are re-joined with spaces; close enough for reading model outputs ("kitchen").
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, special_tokens=[PAD, UNK, EOS], min_frequency=1)
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, unk_token=UNK, eos_token=EOS)


def load_tokenizer(name_or_path: str):
    """An HF tokenizer from the hub or a local dir, with the one pad rule (``rmt.runs``)."""
    return runs.load_tokenizer(name_or_path, what="tokenizer")


def answer_eos_id(tokenizer) -> int | None:
    """The token that ends an answer (trained after the answer so generation can stop)."""
    return tokenizer.eos_token_id
