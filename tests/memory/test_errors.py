"""Bad input gets one clear ValueError naming the bad value and what is allowed."""

import subprocess
import sys

import pytest
import torch
import transformers

from rmt import RMTConfig, RecurrentMemoryTransformer
from tests.memory.tiny_models import VOCAB, random_ids, tiny_causal_lm


@pytest.mark.parametrize("kwargs, match", [
    (dict(segment_size=0), "segment_size must be an integer >= 1, got 0"),
    (dict(segment_size=-3), "segment_size must be an integer >= 1, got -3"),
    (dict(num_mem_tokens=-1), "num_mem_tokens must be an integer >= 0, got -1"),
    (dict(bptt_depth=0), "bptt_depth must be -1"),
    (dict(bptt_depth=-2), "bptt_depth must be -1"),
    (dict(num_mem_tokens=0, self_retrieval=True), r"memory_kind=.rmt-r. \(self_retrieval=True\) needs num_mem_tokens >= 1"),
    (dict(segment_size=2.5), "segment_size"),
])
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RMTConfig(**kwargs)


def test_unsupported_model_classes():
    with pytest.raises(ValueError, match="unsupported model class Linear"):
        RecurrentMemoryTransformer.wrap(torch.nn.Linear(2, 2), RMTConfig())
    bare = transformers.GPT2Model(transformers.GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=10))
    with pytest.raises(ValueError, match="unsupported model class GPT2Model"):
        RecurrentMemoryTransformer.wrap(bare, RMTConfig())
    t5 = transformers.T5ForConditionalGeneration(transformers.T5Config(num_layers=1, d_model=8, d_ff=8, num_heads=1, d_kv=8, vocab_size=10))
    with pytest.raises(ValueError, match="unsupported model class T5ForConditionalGeneration"):
        RecurrentMemoryTransformer.wrap(t5, RMTConfig())


def test_encoder_special_tokens():
    from tests.memory.tiny_models import tiny_bert

    with pytest.raises(ValueError, match="need cls_token_id and sep_token_id"):
        RecurrentMemoryTransformer.wrap(tiny_bert(), RMTConfig(num_mem_tokens=1, segment_size=4))
    with pytest.raises(ValueError, match=f"sep_token_id={VOCAB} is outside the vocabulary"):
        RecurrentMemoryTransformer.wrap(tiny_bert(), RMTConfig(num_mem_tokens=1, segment_size=4, cls_token_id=1, sep_token_id=VOCAB))


def test_segment_longer_than_learned_positions():
    with pytest.raises(ValueError, match="allowed segment_size <= 120"):  # 128 positions - 2*4 memory
        RecurrentMemoryTransformer.wrap(tiny_causal_lm("gpt2"), RMTConfig(num_mem_tokens=4, segment_size=125))


@pytest.fixture(scope="module")
def model():
    return RecurrentMemoryTransformer.wrap(tiny_causal_lm("gpt2"), RMTConfig(num_mem_tokens=2, segment_size=4))


def test_empty_input(model):
    with pytest.raises(ValueError, match="empty"):
        model(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="row 1 of the batch is empty"):
        model(random_ids(2, 5), attention_mask=torch.tensor([[1] * 5, [0] * 5]))
    with pytest.raises(ValueError, match="no tokens"):
        model.stream([])
    with pytest.raises(ValueError, match="empty"):
        model.generate(torch.zeros(1, 0, dtype=torch.long))


def test_token_ids_outside_the_vocabulary(model):
    bad = random_ids(1, 6)
    bad[0, 3] = VOCAB
    with pytest.raises(ValueError, match=f"token id {VOCAB} in input_ids is outside the vocabulary: allowed 0..{VOCAB - 1}"):
        model(bad)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model.generate(bad)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model.stream([random_ids(1, 3), bad])
    with pytest.raises(ValueError, match="token id -1"):
        model(torch.tensor([[1, -1]]))


def test_wrong_shapes_and_types(model):
    with pytest.raises(ValueError, match="integer token ids"):
        model(torch.rand(1, 4))
    with pytest.raises(ValueError, match="attention_mask must have the shape"):
        model(random_ids(2, 4), attention_mask=torch.ones(2, 3))
    with pytest.raises(ValueError, match="labels must have the shape"):
        model(random_ids(2, 4), labels=random_ids(2, 3))
    with pytest.raises(ValueError, match=r"memory must be a tensor of shape \(2, 2, 32\)"):
        model(random_ids(2, 4), memory=torch.zeros(2, 3, 32))
    with pytest.raises(ValueError, match="same batch size"):
        model.stream([random_ids(2, 3), random_ids(1, 3)])


def test_errors_are_one_line_without_traceback_in_the_cli(tmp_path):
    code = (
        "from rmt.cli import main\n"
        "main(['demo', '--tokens', '0'])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--tokens" in lines[0]


def test_more_memory_tokens_than_positions_names_num_mem_tokens():
    # 128 learned positions; RMT takes 2 per memory token and needs one for a segment token
    with pytest.raises(ValueError) as info:
        RecurrentMemoryTransformer.wrap(tiny_causal_lm("gpt2"), RMTConfig(num_mem_tokens=10**9))
    message = str(info.value)
    assert "num_mem_tokens=1000000000" in message and message.endswith("allowed num_mem_tokens <= 63")
    assert "segment_size <= -" not in message
