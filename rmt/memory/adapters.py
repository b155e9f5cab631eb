"""Per-architecture facts: which HF models we wrap, and how (decoder vs encoder, where things live).

Decoders come in families (families.py: GPT-2, Llama/Qwen2/Qwen3, Mistral), each described once
for both layer-level schedules. Adding a decoder architecture means adding its ``model_type`` to
its family there (or a new ``Family``), after checking that its causal-LM class is ``<inner
model> + lm_head`` (no logit scaling / soft-capping, which the decoder path would skip) and that its
inner model accepts ``inputs_embeds`` and ``position_ids``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

from rmt.errors import UsageError
from rmt.memory.families import FAMILIES, family_for

# Causal LMs whose forward is exactly `lm_head(inner_model(...).last_hidden_state)`: the families' (families.py).
DECODER_MODEL_TYPES = {t for family in FAMILIES for t in family.model_types}
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
    name = _class_name(model)
    supported = (
        "causal LMs of type " + ", ".join(sorted(DECODER_MODEL_TYPES))
        + " (e.g. GPT2LMHeadModel, LlamaForCausalLM) or *ForSequenceClassification of type "
        + ", ".join(sorted(ENCODER_MODEL_TYPES))
    )
    if not isinstance(model, PreTrainedModel):
        raise UsageError(f"unsupported model class {name}: expected a Hugging Face PreTrainedModel; supported: {supported}")
    config = model.config
    model_type = getattr(config, "model_type", None)
    if model_type in DECODER_MODEL_TYPES and (name.endswith("ForCausalLM") or name.endswith("LMHeadModel")):
        kind = "decoder"
    elif model_type in ENCODER_MODEL_TYPES and name.endswith("ForSequenceClassification"):
        kind = "encoder"
    else:
        raise UsageError(f"unsupported model class {name} (model_type={model_type!r}); supported: {supported}")
    if getattr(config, "position_embedding_type", "absolute") not in (None, "absolute"):
        raise UsageError(
            f"unsupported position_embedding_type={config.position_embedding_type!r} for {name}; "
            "only absolute positions are supported for encoders"
        )
    max_positions = None
    if kind == "encoder" or not family_for(model_type).rotary:  # a learned table (BERT's absolute positions)
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


class DecoderLayers:
    """Layer-level access to a wrapped causal LM: what its HF forward does, one layer at a time.

    ARMT adds its associative read before every layer and writes after it, so it runs the layers
    itself::

        layers = DecoderLayers(model)
        hidden, context = layers.start(inputs_embeds, attention_mask, position_ids, cache)
        for i in range(len(layers)):
            hidden = layers.run(i, hidden, context)
        hidden = layers.final_norm(hidden)     # == inner_model(model)(...).last_hidden_state

    The family (families.py) says what differs: GPT-2 (learned positions added to the embeddings,
    one causal mask) or the Llama family (rotary embeddings per layer call; Mistral may use one
    sliding-window mask, Qwen2/3 choose a mask per layer by ``config.layer_types``). Tested equal
    to the HF forward.
    """

    def __init__(self, model):
        self.model = model
        self.inner = inner_model(model)
        self.config = self.inner.config
        self.model_type = self.config.model_type
        self.family = family_for(self.model_type)
        if self.family is None:
            raise UsageError(f"no layer-level access for model_type={self.model_type!r}; supported: {', '.join(sorted(DECODER_MODEL_TYPES))}")
        self.layers = self.family.layers(self.inner)
        self.norm = self.family.final_norm(self.inner)

    def __len__(self) -> int:
        return len(self.layers)

    def mask_type(self, i: int) -> str:
        """Which mask layer ``i`` takes: ``full_attention`` or ``sliding_attention``."""
        return self.family.mask_type(self.config, i)

    def start(self, inputs_embeds, attention_mask, position_ids, cache=None):
        """The hidden state entering layer 0 and the per-call context the layers need (masks,
        rotary embeddings, cache); ``attention_mask`` is 2-D (batch, cached + new) or None."""
        mask_kwargs = dict(config=self.config, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                           past_key_values=cache, position_ids=position_ids)
        types = {self.mask_type(i) for i in range(len(self.layers))}
        masks = {}
        if "full_attention" in types:
            masks["full_attention"] = create_causal_mask(**mask_kwargs)
        if "sliding_attention" in types:
            masks["sliding_attention"] = create_sliding_window_causal_mask(**mask_kwargs)
        context = {"masks": masks, "position_ids": position_ids, "cache": cache}
        return self.family.start(self.inner, inputs_embeds, position_ids, context), context

    def run(self, i: int, hidden: torch.Tensor, context: dict, keep_from: int = 0) -> torch.Tensor:
        """Layer ``i`` on ``hidden`` (its own activation checkpointing, if enabled, applies).

        ``keep_from`` > 0: only rows ``keep_from:`` of the output are wanted (the last layer of a
        segment whose earlier outputs nobody reads: RMT's write positions, the tokens that need
        logits). Attention still runs on every row, since those rows read every row's keys and
        values; the residual adds and the MLP (two thirds of a layer's matmuls) run on the wanted
        rows only. Row by row these are the same operations as the whole layer's; a matmul kernel
        may round a product of a few rows differently from one of many (equal up to float rounding,
        tested; bit for bit with GPT-2's Conv1D on this project's CPU for 4+ rows)."""
        layer, mask, cache = self.layers[i], context["masks"][self.mask_type(i)], context["cache"]
        if keep_from and self._can_keep_rows(layer, cache):
            if layer.gradient_checkpointing and layer.training:
                return checkpoint(self._run_rows, layer, hidden, mask, context, keep_from, use_reentrant=False)
            return self._run_rows(layer, hidden, mask, context, keep_from)
        out = self.family.call_layer(layer, hidden, mask, context)
        return out[:, keep_from:] if keep_from else out

    def _can_keep_rows(self, layer, cache) -> bool:
        """Whether ``_run_rows`` computes exactly what ``layer`` does: one of the layer classes whose
        forward it follows, no KV cache, and no dropout after the MLP in training (it would draw
        its random mask for fewer rows: the same distribution, but not the same numbers)."""
        if cache is not None or type(layer).__name__ not in self.family.layer_classes:
            return False
        if getattr(layer, "crossattention", None) is not None:
            return False
        dropout = getattr(layer.mlp, "dropout", None)
        return not (layer.training and dropout is not None and dropout.p > 0)

    def _run_rows(self, layer, hidden, mask, context, keep_from):
        """``layer``'s forward (its family's order of operations, families.py) with the rows before
        ``keep_from`` dropped after attention. (Attention itself stays whole: the HF module with its
        own masks and kernels. Cutting its queries too would save little more, and SDPA rounds a
        few queries differently from many.)"""
        return self.family.run_rows(layer, hidden, mask, context, keep_from)

    def final_norm(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.norm(hidden)
