"""Model families: one description per family of decoder, read by both layer-level schedules.

``DecoderLayers`` (adapters.py: the sequential segment loop, one HF layer call at a time) and
``StackedLayers`` (diagonal.py: ARMT's diagonal batching, a group of layers as batched matmuls on
stacked weights) ask the model's ``Family`` everything that differs between families: where the
layers and the final norm live, how positions enter (learned table or rotary), how an HF layer is
called, the layer's operations in order (on the HF modules, and on stacked weights), the names of
its weights and which configurations the stacked math does not cover.

Adding a family = one ``Family`` subclass here and its line in ``FAMILIES``; checked by
tests/memory/test_diagonal.py and test_fast_paths.py (equal to the HF forward, layer by layer).
"""

from __future__ import annotations

import sys

import torch


class Family:
    """The interface (and the names a family fills in)."""

    name = ""
    model_types: frozenset = frozenset()  # config.model_type values of this family
    layer_classes: frozenset = frozenset()  # decoder layer classes whose forward ``run_rows`` follows
    # Positions by rotary embeddings per layer call; else a learned table added to the input, whose
    # size limits a segment pass (adapters.adapter_for reads the limit from the config).
    rotary = False

    # -------------------------------------------------------------- where things are
    def layers(self, inner):
        """The decoder layers of the inner model (``inner_model(model)``)."""
        raise NotImplementedError

    def final_norm(self, inner):
        raise NotImplementedError

    def mask_type(self, config, i: int) -> str:
        """Which mask layer ``i`` takes: ``full_attention`` or ``sliding_attention``."""
        layer_types = getattr(config, "layer_types", None)
        return layer_types[i] if layer_types else "full_attention"

    # -------------------------------------------------------------- the HF layers (sequential loop)
    def start(self, inner, inputs_embeds, position_ids, context: dict) -> torch.Tensor:
        """The hidden state entering layer 0; may add to ``context`` what the layers need."""
        raise NotImplementedError

    def call_layer(self, layer, hidden, mask, context: dict):
        """The HF layer's own forward."""
        raise NotImplementedError

    def run_rows(self, layer, hidden, mask, context: dict, keep_from: int):
        """The layer's forward on its HF modules, in its order of operations, with the rows before
        ``keep_from`` dropped after attention (see ``DecoderLayers.run``)."""
        raise NotImplementedError

    # -------------------------------------------------------------- stacked weights (diagonal batching)
    def stack(self, stacked, blocks, config) -> dict:
        """Set on ``stacked`` the per-model constants the stacked math needs and return the weights
        to stack: {key: attribute path inside a layer}."""
        raise NotImplementedError

    def stacked_weights(self, weights: dict) -> dict:
        """The stacked weights as ``stacked_layer`` multiplies them (e.g. transposed)."""
        return weights

    def stacked_unsupported_reason(self, layers, width: int) -> str | None:
        """Configurations of this family whose layer math ``stacked_layer`` does not re-implement."""
        return None

    def stacked_layer(self, stacked, lo: int, hi: int, h: torch.Tensor, mask, rotary) -> torch.Tensor:
        """Layers lo..hi (one per group item) on ``h`` (G, B, T, hidden), updated in place."""
        raise NotImplementedError


class GPT2Family(Family):
    """GPT-2: a learned position table added to the embeddings, LayerNorm, Conv1D projections
    (``x @ W``, one fused q/k/v), one causal mask."""

    name = "gpt2"
    model_types = frozenset({"gpt2"})
    layer_classes = frozenset({"GPT2Block"})

    def layers(self, inner):
        return inner.h

    def final_norm(self, inner):
        return inner.ln_f

    def start(self, inner, inputs_embeds, position_ids, context):
        return inner.drop(inputs_embeds + inner.wpe(position_ids))

    def call_layer(self, layer, hidden, mask, context):
        cache = context["cache"]
        return layer(hidden, cache, mask, None, use_cache=cache is not None, position_ids=context["position_ids"])

    def run_rows(self, layer, hidden, mask, context, keep_from):
        attn, _ = layer.attn(layer.ln_1(hidden), past_key_values=None, attention_mask=mask, use_cache=False,
                             position_ids=context["position_ids"])
        hidden = attn[:, keep_from:] + hidden[:, keep_from:]
        return hidden + layer.mlp(layer.ln_2(hidden))

    def stack(self, stacked, blocks, config):
        stacked.eps = config.layer_norm_epsilon
        stacked.act = blocks[0].mlp.act
        stacked.heads = config.num_attention_heads
        stacked.scaling = blocks[0].attn.scaling
        return {"ln1_w": "ln_1.weight", "ln1_b": "ln_1.bias", "qkv_w": "attn.c_attn.weight", "qkv_b": "attn.c_attn.bias",
                "o_w": "attn.c_proj.weight", "o_b": "attn.c_proj.bias", "ln2_w": "ln_2.weight", "ln2_b": "ln_2.bias",
                "fc_w": "mlp.c_fc.weight", "fc_b": "mlp.c_fc.bias", "proj_w": "mlp.c_proj.weight", "proj_b": "mlp.c_proj.bias"}

    def stacked_unsupported_reason(self, layers, width):
        if getattr(layers.config, "add_cross_attention", False):
            return "GPT-2 with cross-attention layers"
        if len({block.attn.scaling for block in layers.layers}) > 1:
            return "GPT-2 with scale_attn_by_inverse_layer_idx (a different attention scale per layer)"
        return None

    def stacked_layer(self, stacked, lo, hi, h, mask, rotary):
        G, B, T, H = h.shape
        qkv = stacked._matmul(stacked._layer_norm(h, "ln1", lo, hi), "qkv", lo, hi)
        q, k, v = (x.reshape(G * B, T, stacked.heads, -1).transpose(1, 2) for x in qkv.split(H, dim=-1))
        a = stacked._attention(q, k, v, mask).transpose(1, 2).reshape(G, B, T, H)
        h.add_(stacked._matmul(a, "o", lo, hi))
        f = stacked._matmul(stacked._activation(stacked._matmul(stacked._layer_norm(h, "ln2", lo, hi), "fc", lo, hi)), "proj", lo, hi)
        return h.add_(f)


class LlamaFamily(Family):
    """Llama and its kin (Qwen2, Qwen3): rotary positions per layer call, RMSNorm, separate q/k/v
    projections (``nn.Linear``: ``x @ W^T``, optional biases), grouped-query attention (fewer k/v
    heads, repeated), gated MLP; Qwen3 adds an RMSNorm per head on q and k; Qwen2/3 may choose a
    mask per layer (``config.layer_types``)."""

    name = "llama"
    model_types = frozenset({"llama", "qwen2", "qwen3"})
    layer_classes = frozenset({"LlamaDecoderLayer", "Qwen2DecoderLayer", "Qwen3DecoderLayer"})
    rotary = True

    def layers(self, inner):
        return inner.layers

    def final_norm(self, inner):
        return inner.norm

    def start(self, inner, inputs_embeds, position_ids, context):
        context["position_embeddings"] = inner.rotary_emb(inputs_embeds, position_ids=position_ids)
        return inputs_embeds

    def call_layer(self, layer, hidden, mask, context):
        cache = context["cache"]
        return layer(hidden, attention_mask=mask, position_embeddings=context["position_embeddings"],
                     position_ids=context["position_ids"], past_key_values=cache, use_cache=cache is not None)

    def run_rows(self, layer, hidden, mask, context, keep_from):
        attn, _ = layer.self_attn(hidden_states=layer.input_layernorm(hidden), attention_mask=mask,
                                  position_ids=context["position_ids"], past_key_values=None, use_cache=False,
                                  position_embeddings=context["position_embeddings"])
        hidden = hidden[:, keep_from:] + attn[:, keep_from:]
        return hidden + layer.mlp(layer.post_attention_layernorm(hidden))

    def stack(self, stacked, blocks, config):
        attn = blocks[0].self_attn
        stacked.eps = blocks[0].input_layernorm.variance_epsilon
        stacked.act = blocks[0].mlp.act_fn
        stacked.head_dim = attn.head_dim
        stacked.groups = attn.num_key_value_groups
        stacked.scaling = attn.scaling
        module = sys.modules[type(attn).__module__]
        stacked.apply_rotary = module.apply_rotary_pos_emb
        stacked.repeat_kv = module.repeat_kv
        names = {"in_w": "input_layernorm.weight", "post_w": "post_attention_layernorm.weight"}
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            names[proj + "_w"], names[proj + "_b"] = f"self_attn.{proj}.weight", f"self_attn.{proj}.bias"
        for proj in ("gate_proj", "up_proj", "down_proj"):
            names[proj + "_w"], names[proj + "_b"] = f"mlp.{proj}.weight", f"mlp.{proj}.bias"
        names["q_norm"], names["k_norm"] = "self_attn.q_norm.weight", "self_attn.k_norm.weight"
        return names

    def stacked_weights(self, weights: dict) -> dict:
        """nn.Linear computes x @ W^T: the transposed views, so every projection is x @ w."""
        for key in list(weights):
            if key.endswith("proj_w"):
                w = weights[key]
                weights[key] = [v.t() for v in w] if isinstance(w, list) else w.transpose(1, 2)
        return weights

    def stacked_unsupported_reason(self, layers, width):
        if len({block.self_attn.scaling for block in layers.layers}) > 1:
            return "layers with different attention scales"
        window = getattr(layers.config, "sliding_window", None)
        sliding = any(layers.mask_type(i) == "sliding_attention" for i in range(len(layers)))
        if sliding and window is not None and window < width:
            return f"a sliding attention window ({window}) shorter than a segment with its memory tokens ({width})"
        return None

    def stacked_layer(self, stacked, lo, hi, h, mask, rotary):
        G, B, T, H = h.shape
        x = stacked._rms_norm(h, stacked.w["in_w"][lo : hi + 1])

        def project(key, norm_key=None):
            y = stacked._matmul(x, key, lo, hi).view(G, B, T, -1, stacked.head_dim)
            if stacked.w.get(norm_key) is not None:  # Qwen3: RMSNorm over each head's dims
                y = stacked._rms_norm(y, stacked.w[norm_key][lo : hi + 1])
            return y.reshape(G * B, T, -1, stacked.head_dim).transpose(1, 2)

        q, k, v = project("q_proj", "q_norm"), project("k_proj", "k_norm"), project("v_proj")
        q, k = stacked.apply_rotary(q, k, *rotary)
        a = stacked._attention(q, stacked.repeat_kv(k, stacked.groups), stacked.repeat_kv(v, stacked.groups), mask)
        h.add_(stacked._matmul(a.transpose(1, 2).reshape(G, B, T, -1), "o_proj", lo, hi))
        x = stacked._rms_norm(h, stacked.w["post_w"][lo : hi + 1])
        f = stacked._matmul(stacked.act(stacked._matmul(x, "gate_proj", lo, hi)).mul_(stacked._matmul(x, "up_proj", lo, hi)),
                            "down_proj", lo, hi)
        return h.add_(f)


class MistralFamily(LlamaFamily):
    """Mistral: Llama's layers; one sliding-window mask for every layer when ``sliding_window`` is set."""

    name = "mistral"
    model_types = frozenset({"mistral"})
    layer_classes = frozenset({"MistralDecoderLayer"})

    def mask_type(self, config, i):
        return "full_attention" if config.sliding_window is None else "sliding_attention"


FAMILIES: tuple[Family, ...] = (GPT2Family(), LlamaFamily(), MistralFamily())


def family_for(model_type: str) -> Family | None:
    """The family of ``config.model_type`` (None: not a decoder family we know)."""
    return next((family for family in FAMILIES if model_type in family.model_types), None)
