"""Tiny models built from scratch (no downloads) for the rmt.memory tests."""

import torch
import transformers

VOCAB = 97


def tiny_causal_lm(kind: str = "gpt2", seed: int = 0, tie_word_embeddings: bool = True):
    """A 2-layer causal LM; a large init range makes its predictions varied (better generate tests)."""
    torch.manual_seed(seed)
    common = dict(vocab_size=VOCAB, initializer_range=0.2, tie_word_embeddings=tie_word_embeddings)
    if kind == "gpt2":
        config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=128, bos_token_id=0, eos_token_id=0, **common)
        model = transformers.GPT2LMHeadModel(config)
    elif kind == "llama":
        config = transformers.LlamaConfig(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=32,
                                          intermediate_size=64, max_position_embeddings=256, bos_token_id=0, eos_token_id=0, pad_token_id=0, **common)
        model = transformers.LlamaForCausalLM(config)
    elif kind == "qwen2":
        config = transformers.Qwen2Config(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=32,
                                          intermediate_size=64, max_position_embeddings=256, bos_token_id=0, eos_token_id=0, pad_token_id=0, **common)
        model = transformers.Qwen2ForCausalLM(config)
    elif kind in ("mistral", "qwen3"):
        config_class = transformers.MistralConfig if kind == "mistral" else transformers.Qwen3Config
        model_class = transformers.MistralForCausalLM if kind == "mistral" else transformers.Qwen3ForCausalLM
        config = config_class(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=32, head_dim=8,
                              intermediate_size=64, max_position_embeddings=256, bos_token_id=0, eos_token_id=0, pad_token_id=0, **common)
        model = model_class(config)
    else:
        raise ValueError(kind)
    return model.eval()


def tiny_bert(seed: int = 0, num_labels: int = 3):
    torch.manual_seed(seed)
    config = transformers.BertConfig(num_hidden_layers=2, num_attention_heads=2, hidden_size=32, intermediate_size=64,
                                     vocab_size=VOCAB, max_position_embeddings=128, num_labels=num_labels, pad_token_id=0)
    return transformers.BertForSequenceClassification(config).eval()


CLS, SEP = 1, 2


def random_ids(*shape, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, shape, generator=g)



def assert_close_to_scale(actual, expected, tol: float = 1e-5):
    """``actual`` equals ``expected`` up to ``tol`` times the tensor's scale (max |expected|, at least 1).

    Two schedules of the same fp32 arithmetic (diagonal vs sequential, streamed vs one call, a padded
    batch vs one row) differ only by summation order, whose error grows with the magnitudes summed:
    a bound relative to the tensor's scale holds on any CPU, while an absolute 1e-5 on logits of
    size ~10 measures one machine's rounding. A real error (a wrong memory, a wrong mask) moves
    values by far more than 1e-5 of their scale.
    """
    scale = max(1.0, float(expected.detach().abs().max())) if expected.numel() else 1.0
    error = float((actual.detach() - expected.detach()).abs().max()) if expected.numel() else 0.0
    assert actual.shape == expected.shape, (tuple(actual.shape), tuple(expected.shape))
    assert error <= tol * scale, f"max abs difference {error:.3g} > {tol:g} x scale {scale:.3g}"
