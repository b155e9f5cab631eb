"""LastWindowModel: a model without memory reads the last window of a longer prompt (the
no-memory baseline of `rmt reproduce`), never "over window"."""

import pytest
import torch

from rmt.evaluation.base import LocalRunner
from rmt.evaluation.hf import LastWindowModel
from tests.memory.tiny_models import VOCAB, random_ids, tiny_causal_lm


class _Tokenizer:
    """Just what LocalModel needs from a tokenizer for token-id prompts."""

    eos_token_id = 5
    pad_token_id = 0
    chat_template = None

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(map(str, ids))


def _model(window=16):
    lm = tiny_causal_lm("gpt2")
    return LastWindowModel("tiny", model=lm, tokenizer=_Tokenizer(), window=window, device="cpu"), lm


def test_each_token_is_predicted_from_exactly_the_last_window():
    model, lm = _model(16)
    prompts = [random_ids(1, 40, seed=s)[0].tolist() for s in (1, 2)]
    prompts.append(random_ids(1, 9, seed=3)[0].tolist())  # shorter than the window: read whole
    new = model._generate(prompts, max_new_tokens=3)
    for prompt, tokens in zip(prompts, new):
        seq = list(prompt)
        for token in tokens:  # greedy, each step over the last 16 tokens only
            with torch.no_grad():
                logits = lm(input_ids=torch.tensor([seq[-16:]])).logits[0, -1]
            assert token == int(logits.argmax())
            seq.append(token)
            if token == 5:
                break
    # Tokens before the window change nothing; a token inside it is read.
    before = list(prompts[0])
    before[:20] = [(t + 7) % VOCAB for t in before[:20]]
    assert model._generate([before], 3) == [new[0]]
    with torch.no_grad():
        inside = list(prompts[0])
        inside[-1] = (inside[-1] + 1) % VOCAB
        a = lm(input_ids=torch.tensor([prompts[0][-16:]])).logits[0, -1]
        b = lm(input_ids=torch.tensor([inside[-16:]])).logits[0, -1]
    assert not torch.equal(a, b)


def test_batched_rows_of_any_length_equal_one_by_one():
    model, _ = _model(16)
    prompts = [random_ids(1, n, seed=n)[0].tolist() for n in (5, 16, 30, 64)]
    assert model._generate(prompts, 4) == [model._generate([p], 4)[0] for p in prompts]


def test_a_long_prompt_is_answered_not_over_window():
    model, _ = _model(16)
    assert model.window is None and model.read_window == 16 and model.fits(10_000, 20)
    runner = LocalRunner(model, prompt_fn=lambda record, chat: record["input"])
    model.encode = lambda prompt: [int(x) for x in prompt.split()]
    answers = runner.answer([{"input": " ".join(map(str, random_ids(1, 50, seed=4)[0].tolist()))}])
    assert answers[0].status == "ok" and answers[0].n_tokens == 50


def test_sampling_is_a_clear_error():
    model, _ = _model(16)
    with pytest.raises(ValueError, match="greedily"):
        model._generate([[1, 2, 3]], 2, do_sample=True)
