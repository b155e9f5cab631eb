"""Per-architecture facts: which HF models we wrap, and how (decoder vs encoder, where things live).

Adding an architecture means adding its ``model_type`` here after checking that its causal-LM class
is ``<inner model> + lm_head`` (no logit scaling / soft-capping, which the decoder path would skip)
and that its inner model accepts ``inputs_embeds`` and ``position_ids``.
"""

from __future__ import annotations

from dataclasses import dataclass

# Causal LMs whose forward is exactly `lm_head(inner_model(...).last_hidden_state)`.
DECODER_MODEL_TYPES = {"gpt2", "llama", "mistral", "qwen2", "qwen3"}
# Sequence-classification encoders whose input layout is [CLS] ... [SEP].
ENCODER_MODEL_TYPES = {"bert"}


@dataclass
class Adapter:
    kind: str  # "decoder" or "encoder"
    model_type: str
    hidden_size: int
    vocab_size: int
    max_positions: int | None  # learned absolute positions limit the segment length; None for RoPE

    @property
    def is_decoder(self) -> bool:
        return self.kind == "decoder"


def _class_name(model) -> str:
    return type(model).__name__


def adapter_for(model) -> Adapter:
    """Inspect a HF model and say how to wrap it; raise ValueError for anything unsupported."""
    from transformers import PreTrainedModel

    name = _class_name(model)
    supported = (
        "causal LMs of type " + ", ".join(sorted(DECODER_MODEL_TYPES))
        + " (e.g. GPT2LMHeadModel, LlamaForCausalLM) or *ForSequenceClassification of type "
        + ", ".join(sorted(ENCODER_MODEL_TYPES))
    )
    if not isinstance(model, PreTrainedModel):
        raise ValueError(f"unsupported model class {name}: expected a Hugging Face PreTrainedModel; supported: {supported}")
    config = model.config
    model_type = getattr(config, "model_type", None)
    if model_type in DECODER_MODEL_TYPES and (name.endswith("ForCausalLM") or name.endswith("LMHeadModel")):
        kind = "decoder"
    elif model_type in ENCODER_MODEL_TYPES and name.endswith("ForSequenceClassification"):
        kind = "encoder"
    else:
        raise ValueError(f"unsupported model class {name} (model_type={model_type!r}); supported: {supported}")
    if getattr(config, "position_embedding_type", "absolute") not in (None, "absolute"):
        raise ValueError(
            f"unsupported position_embedding_type={config.position_embedding_type!r} for {name}; "
            "only absolute positions are supported for encoders"
        )
    max_positions = None
    if model_type in ("gpt2", "bert"):
        max_positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    return Adapter(
        kind=kind,
        model_type=model_type,
        hidden_size=model.get_input_embeddings().weight.shape[1],
        vocab_size=model.get_input_embeddings().weight.shape[0],
        max_positions=max_positions,
    )


def inner_model(model):
    """The decoder stack without the LM head (GPT2LMHeadModel.transformer, LlamaForCausalLM.model)."""
    return getattr(model, model.base_model_prefix)
