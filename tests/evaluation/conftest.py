"""Tiny models built from scratch for the evaluation tests (no downloads)."""

from __future__ import annotations

import pytest

WORDS = ("mary john daniel sandra went moved journeyed travelled back to the bathroom bedroom garden hallway "
         "kitchen office where is . ? answer question context the of and a in was it he she said").split()
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_tokenizer(chat_template: str | None = None):
    """A small word-level tokenizer trained with `tokenizers`, as an HF PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers, decoders
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    trainer = trainers.WordLevelTrainer(special_tokens=["<unk>", "<pad>", "<eos>", "<|user|>", "<|assistant|>"])
    corpus = [" ".join(WORDS)] * 3 + ["Mary went to the kitchen. Where is Mary? kitchen"]
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>")
    if chat_template:
        fast.chat_template = chat_template
    return fast


def build_gpt2(tokenizer, n_positions: int = 256, seed: int = 0):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=n_positions, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    return GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory):
    """A tiny GPT-2 (window 256) + word-level tokenizer without chat template, saved like a hub model."""
    path = tmp_path_factory.mktemp("tiny_gpt2")
    tokenizer = build_tokenizer()
    build_gpt2(tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_chat_dir(tmp_path_factory):
    """The same tiny GPT-2 with a chat template on its tokenizer."""
    path = tmp_path_factory.mktemp("tiny_gpt2_chat")
    tokenizer = build_tokenizer(CHAT_TEMPLATE)
    build_gpt2(tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
