"""One description per model family (rmt/memory/families.py), read by both layer-level schedules:
the sequential loop's DecoderLayers and diagonal batching's StackedLayers."""

import pytest

from rmt.memory.adapters import DECODER_MODEL_TYPES, DecoderLayers
from rmt.memory.diagonal import StackedLayers
from rmt.memory.families import FAMILIES, family_for
from tests.memory.tiny_models import tiny_causal_lm


def test_the_supported_decoders_are_the_families_model_types():
    assert DECODER_MODEL_TYPES == {"gpt2", "llama", "mistral", "qwen2", "qwen3"}
    assert DECODER_MODEL_TYPES == {t for family in FAMILIES for t in family.model_types}
    assert sum(len(family.model_types) for family in FAMILIES) == len(DECODER_MODEL_TYPES)  # each type in one family


@pytest.mark.parametrize("kind, family", [("gpt2", "gpt2"), ("llama", "llama"), ("qwen2", "llama"), ("qwen3", "llama"),
                                          ("mistral", "mistral")])
def test_both_schedules_read_the_same_family(kind, family):
    model = tiny_causal_lm(kind)
    layers, stacked = DecoderLayers(model), StackedLayers(model)
    assert layers.family is stacked.family is family_for(kind)
    assert layers.family.name == family
    assert type(layers.layers[0]).__name__ in layers.family.layer_classes  # the rows-only path applies
