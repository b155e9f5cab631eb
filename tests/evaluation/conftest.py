"""Tiny models built from scratch for the evaluation tests (no downloads)."""

from __future__ import annotations

import time

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


def build_gpt2(tokenizer, n_positions: int = 512, seed: int = 0):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=n_positions, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    return GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory):
    """A tiny GPT-2 (window 512) + word-level tokenizer without chat template, saved like a hub model."""
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


@pytest.fixture(scope="session")
def wordy_chat_dir(tmp_path_factory):
    """A tiny chat GPT-2 whose greedy answers are words: with untied, large random weights it does
    not just repeat the prompt's last token (tiny_chat_dir answers with <|assistant|>, decoded as "")."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    path = tmp_path_factory.mktemp("wordy")
    tok = build_tokenizer(CHAT_TEMPLATE)
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=512, n_embd=32, n_layer=2, n_head=2,
                               bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
                               pad_token_id=tok.pad_token_id, tie_word_embeddings=False,
                               initializer_range=0.5)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_rmt_dir(tmp_path_factory):
    """A tiny RMT (2 memory tokens, 32-token segments) around the tiny GPT-2 (window 512), saved like
    `rmt train` does: RecurrentMemoryTransformer.save_pretrained + the tokenizer in the same dir."""
    from rmt import RMTConfig, RecurrentMemoryTransformer

    path = tmp_path_factory.mktemp("tiny_rmt")
    tokenizer = build_tokenizer()
    model = RecurrentMemoryTransformer.wrap(build_gpt2(tokenizer), RMTConfig(num_mem_tokens=2, segment_size=32))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def records_0k():
    from rmt.babilong import generate

    return generate(task="qa1", length="0k", samples=4, seed=0) + generate(task="qa2", length="0k", samples=2, seed=0)


@pytest.fixture(scope="session")
def records_1k():
    from rmt.babilong import generate

    return generate(task="qa1", length="1k", samples=2, seed=0)


class OracleRunner:
    """A fake model that answers with the target (or a wrong room for every `wrong_every`-th record):
    lets the tests check scoring, storing and resuming without a trained model."""

    name = "oracle"
    batch_size = 2

    def __init__(self, wrong_every: int = 0, delay: float = 0.0, name: str = "oracle"):
        self.wrong_every, self.delay, self.name = wrong_every, delay, name
        self.calls = 0  # records answered

    def prompt(self, record):
        return f"{record['input']}\nQuestion: {record['question']}"

    prompt_key = prompt

    def answer(self, records):
        import time

        from rmt.evaluation.base import Answer

        out = []
        for record in records:
            if self.delay:
                time.sleep(self.delay)
            self.calls += 1
            wrong = self.wrong_every and self.calls % self.wrong_every == 0
            out.append(Answer("nowhere" if wrong else f"The answer is {record['target']}."))
        return out

    def close(self):
        pass


# The tiny chat model behind `rmt serve`, and a server of it on loopback (one per test module).
@pytest.fixture(scope="module")
def hf_model(wordy_chat_dir):
    from rmt.evaluation.hf import HFModel

    return HFModel(str(wordy_chat_dir))


@pytest.fixture(scope="module")
def hf_server(hf_model):
    from rmt.serving.server import create_app, serve_in_thread

    with serve_in_thread(create_app(hf_model, "tiny")) as url:
        yield url


def wait_until(condition, seconds: float = 60.0, what: str = "condition") -> None:
    """Poll ``condition`` until it holds; an AssertionError naming ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
