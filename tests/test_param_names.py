"""Each family's flattened parameter names and their logical axes, pinned: conversion,
checkpoints and sharding all key on them, so a port or a rename must show here."""

import functools

import flax.linen as nn
import jax
import pytest
from flax import traverse_util

from jaxqa import models
from jaxqa.models.encoder import SpanModel, per_layer

LEAVES = {
    "LayerNorm": ("bias", "scale"),
    "dense": ("bias", "kernel"),
    "embed": ("embedding",),
    "NoNorm": ("bias", "weight"),
}


def named(prefix: str, **modules: str) -> set[str]:
    return {f"{prefix}{module}/{leaf}" for module, kind in modules.items() for leaf in LEAVES[kind]}


EXPECTED_LAYER_0 = {
    "bert": named(
        "layer_0/",
        query="dense",
        key="dense",
        value="dense",
        attention_output="dense",
        attention_LayerNorm="LayerNorm",
        intermediate="dense",
        output="dense",
        output_LayerNorm="LayerNorm",
    ),
    "squeezebert": named(
        "layer_0/",
        query="dense",
        key="dense",
        value="dense",
        post_attention="dense",
        post_attention_layernorm="LayerNorm",
        intermediate="dense",
        output="dense",
        output_layernorm="LayerNorm",
    ),
    "mobilebert": named(
        "layer_0/",
        query="dense",
        key="dense",
        value="dense",
        attention_output="dense",
        attention_LayerNorm="NoNorm",
        bottleneck_input="dense",
        bottleneck_input_LayerNorm="NoNorm",
        bottleneck_attention="dense",
        bottleneck_attention_LayerNorm="NoNorm",
        **{
            f"ffn_{j}_{part}": kind
            for j in range(3)
            for part, kind in (("intermediate", "dense"), ("output", "dense"), ("LayerNorm", "NoNorm"))
        },
        intermediate="dense",
        output="dense",
        output_LayerNorm="NoNorm",
        output_bottleneck="dense",
        output_bottleneck_LayerNorm="NoNorm",
    ),
    "distilbert": named(
        "layer_0/",
        q_lin="dense",
        k_lin="dense",
        v_lin="dense",
        out_lin="dense",
        sa_layer_norm="LayerNorm",
        lin1="dense",
        lin2="dense",
        output_layer_norm="LayerNorm",
    ),
}
EMBEDDINGS = named("embeddings/", word_embeddings="embed", position_embeddings="embed", token_type_embeddings="embed")
EXPECTED_OUTSIDE = {
    "bert": EMBEDDINGS | named("embeddings/", LayerNorm="LayerNorm"),
    "squeezebert": EMBEDDINGS | named("embeddings/", LayerNorm="LayerNorm"),
    "mobilebert": EMBEDDINGS | named("embeddings/", LayerNorm="NoNorm", embedding_transformation="dense"),
    "distilbert": named("embeddings/", word_embeddings="embed", position_embeddings="embed", LayerNorm="LayerNorm"),
}


def boxed(model_type: str):
    """The tiny model's parameters with their logical axis names, one layer per name, as files hold them."""
    config = models.family(model_type).sizes["tiny"]
    files = jax.eval_shape(functools.partial(per_layer, config), models.abstract_params(SpanModel(config)))
    return traverse_util.flatten_dict(files, sep="/")


@pytest.mark.parametrize("model_type", models.MODEL_TYPES)
def test_parameter_names_are_pinned(model_type):
    names = set(boxed(model_type))
    layers = models.family(model_type).sizes["tiny"].num_hidden_layers
    expected = EXPECTED_OUTSIDE[model_type] | {"qa_outputs/bias", "qa_outputs/kernel"}
    for i in range(layers):
        expected |= {name.replace("layer_0/", f"layer_{i}/") for name in EXPECTED_LAYER_0[model_type]}
    assert names == expected, (sorted(names - expected), sorted(expected - names))


def test_mobilebert_norms_carry_the_width_they_normalise():
    """The embeddings' norm and each layer's last (after its output bottleneck)
    normalise the hidden width, `embed`; every other norm the bottleneck's."""
    size = models.family("mobilebert").sizes["tiny"]
    assert size.hidden_size != size.intra_bottleneck_size  # else a norm's shape could not tell them apart
    width = {"embed": size.hidden_size, "bottleneck": size.intra_bottleneck_size}
    norms = {name: leaf for name, leaf in boxed("mobilebert").items() if "LayerNorm/" in name}
    layer = {name for name in EXPECTED_LAYER_0["mobilebert"] if "LayerNorm/" in name}
    expected = {name for name in EXPECTED_OUTSIDE["mobilebert"] if "LayerNorm/" in name} | {
        name.replace("layer_0/", f"layer_{i}/") for i in range(size.num_hidden_layers) for name in layer
    }
    assert set(norms) == expected and len(expected) == 2 * (1 + 8 * size.num_hidden_layers)
    for name, leaf in norms.items():
        wide = name.startswith("embeddings/") or "/output_bottleneck_LayerNorm/" in name
        assert isinstance(leaf, nn.Partitioned), name
        assert leaf.names == (("embed",) if wide else ("bottleneck",)), name
        assert leaf.value.shape == (width[leaf.names[0]],), name
