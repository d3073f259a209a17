"""MobileBERT: jaxqa against `transformers` PyTorch, option by option."""

import flax.linen as nn
import jax
import numpy as np
import pytest
from flax import traverse_util
from parity import (
    assert_legacy_names,
    assert_padding_invariant,
    bf16_relative_error,
    flax2pt,
    max_diff,
    param_count,
    random_batch,
    reloaded,
    save_and_convert,
    seeded,
    torch,
    torch_logits,
    transformers,
)

import jaxqa
from jaxqa import models
from jaxqa.models import ConfigError, convert, mobilebert
from jaxqa.models.encoder import SpanModel

TINY = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    embedding_size=32,
    intra_bottleneck_size=32,
)
BASE_PARAMS = 24_582_914  # google/mobilebert-uncased with the span head, in PyTorch and in jaxqa

# Non-default options, each alone on the tiny config (key_query_shared_bottleneck=False
# needs intra_bottleneck_size == hidden_size unless use_bottleneck_attention is set).
OPTIONS = {
    "layer_norm": dict(normalization_type="layer_norm"),
    # A large epsilon makes the two norms that ignore `layer_norm_eps` show.
    "layer_norm_eps": dict(normalization_type="layer_norm", layer_norm_eps=0.5),
    "no_trigram": dict(trigram_input=False),
    "no_trigram_full_width": dict(trigram_input=False, embedding_size=64),  # no embedding_transformation
    "no_bottleneck": dict(use_bottleneck=False),
    "bottleneck_attention": dict(use_bottleneck_attention=True),  # bottleneck.attention built, unused
    "bottleneck_attention_unshared": dict(use_bottleneck_attention=True, key_query_shared_bottleneck=False),
    "unshared_query_key": dict(key_query_shared_bottleneck=False, intra_bottleneck_size=64),
    "one_ffn": dict(num_feedforward_networks=1),
    "three_ffn": dict(num_feedforward_networks=3),
    "intra_48": dict(intra_bottleneck_size=48),
    "no_classifier_activation": dict(classifier_activation=False),
    "gelu": dict(hidden_act="gelu"),
    "gelu_new": dict(hidden_act="gelu_new"),
}


def tiny(**overrides):
    return transformers.MobileBertConfig(**{**TINY, **overrides})


def spread(model, gain: float = 0.5, seed: int = 0):
    """Redraws every weight at a scale where a wrong formula shows.

    The reference init leaves NoNorm at exactly weight 1, bias 0 and the logits
    near 1e-2, so a swapped or missing affine map would pass a 1e-4 check. The
    pad row stays zero, as the reference keeps it.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g)
            if name.endswith("LayerNorm.weight"):  # NoNorm too
                p.copy_(1 + 0.2 * r)
            elif name.endswith("bias"):
                p.copy_(0.1 * r)
            elif name.startswith("mobilebert.embeddings.") and "transformation" not in name:
                p.copy_(0.5 * r)
            else:  # Linear (out, in)
                p.copy_(gain * r / p.shape[1] ** 0.5)
        model.mobilebert.embeddings.word_embeddings.weight[model.config.pad_token_id] = 0
    return model


def qa_model(config, seed=0):
    return spread(seeded(transformers.MobileBertForQuestionAnswering, config, seed), seed=seed)


def test_tiny_matches_pytorch(tmp_path):
    assert mobilebert.Config.from_hf(tiny().to_dict()) == mobilebert.SIZES["tiny"]
    assert max_diff(qa_model(tiny()), tmp_path) <= 1e-4


@pytest.mark.parametrize("option", OPTIONS)
def test_options_match_pytorch(tmp_path, option):
    assert max_diff(qa_model(tiny(**OPTIONS[option])), tmp_path) <= 1e-4


@pytest.mark.parametrize("option", ["no_norm", "layer_norm"])
def test_resaved_by_transformers_matches_pytorch(tmp_path, option):
    model = reloaded(qa_model(tiny(normalization_type=option)), tmp_path / "first")
    diff = max_diff(model, tmp_path)  # saved again to tmp_path / "model-hf"
    assert_legacy_names(tmp_path / "model-hf")  # NoNorm modules are named LayerNorm too
    print(f"max |diff| {diff:.1e}")
    assert diff <= 1e-4


def test_nonzero_pad_row_is_followed(tmp_path):
    """The trigram lets the last real token see the pad token's embedding; with a
    trained (nonzero) pad row the reference's real logits depend on padding, and so do ours."""
    model = qa_model(tiny())
    with torch.no_grad():
        model.mobilebert.embeddings.word_embeddings.weight[0] = 0.5 * torch.randn(32)
    batch = random_batch(30522)
    assert max_diff(model, tmp_path, batch) <= 1e-4
    ids, mask, types = (x[1:2] for x in batch)
    unpadded = torch_logits(model, tuple(x[:, : mask.sum()] for x in (ids, mask, types)))
    assert np.abs(torch_logits(model, (ids, mask, types))[0][:, : mask.sum()] - unpadded[0]).max() > 1e-3


def test_padding_does_not_change_real_logits(tmp_path):
    assert_padding_invariant(jaxqa.load_pretrained(save_and_convert(qa_model(tiny()), tmp_path)))
    fresh = SpanModel(mobilebert.SIZES["tiny"])  # the jaxqa init zeroes the pad row too
    fresh_params = nn.meta.unbox(models.init_params(fresh, jax.random.key(1)))
    assert_padding_invariant(lambda *batch: fresh.apply({"params": fresh_params}, *batch))


@pytest.mark.slow
def test_base_matches_pytorch_and_counts_parameters(tmp_path):
    config = transformers.MobileBertConfig()
    assert mobilebert.Config.from_hf(config.to_dict()) == mobilebert.SIZES["base"]
    model = qa_model(config)
    assert param_count(model) == BASE_PARAMS
    assert max_diff(model, tmp_path) <= 1e-4
    ours = jaxqa.load_pretrained(tmp_path / "model-jaxqa")
    assert sum(x.size for x in jax.tree_util.tree_leaves(ours.params)) == BASE_PARAMS


def test_eval_shape_of_the_full_size_model():
    shapes = models.abstract_params(SpanModel(mobilebert.SIZES["base"]))
    leaves = traverse_util.flatten_dict(nn.meta.unbox(shapes))
    assert sum(np.prod(x.shape) for x in leaves.values()) == BASE_PARAMS
    # One distinct logical axis name per dimension (a repeated name cannot be sharded).
    specs = traverse_util.flatten_dict(nn.get_partition_spec(shapes))
    for key, value in leaves.items():
        assert len(specs[key]) == len(value.shape) and len(set(specs[key])) == len(specs[key]), key
    layers = ("layers", "0_to_23")  # the 24 layers, stacked, and in each its feed-forward networks but the last
    assert tuple(specs[(*layers, "bottleneck_input", "kernel")]) == ("layers", "embed", "bottleneck")
    assert tuple(specs[(*layers, "query", "kernel")]) == ("layers", "bottleneck", "heads")
    assert tuple(specs[(*layers, "value", "kernel")]) == ("layers", "embed", "heads")
    assert tuple(specs[(*layers, "ffn", "0_to_2", "intermediate", "kernel")]) == (
        "layers",
        "blocks",
        "bottleneck",
        "mlp",
    )
    assert tuple(specs[("embeddings", "embedding_transformation", "kernel")]) == ("kernel_in", "embed")


def test_bfloat16_stays_close_to_float32(tmp_path):
    relative = bf16_relative_error(save_and_convert(qa_model(tiny(num_hidden_layers=4)), tmp_path))
    assert relative < 0.05, relative


@pytest.mark.parametrize("option", ["tiny", "bottleneck_attention", "no_trigram_full_width"])
def test_round_trip_gives_back_the_same_tensors(tmp_path, option):
    """Tensors the reference builds but never runs are dropped on the way in
    and come back freshly initialised; all others come back unchanged."""
    model = qa_model(tiny(**OPTIONS.get(option, {})))
    folder = save_and_convert(model, tmp_path)
    assert flax2pt.main([str(folder), str(tmp_path / "back")]) == 0
    back, info = transformers.AutoModelForQuestionAnswering.from_pretrained(tmp_path / "back", output_loading_info=True)
    assert type(back) is transformers.MobileBertForQuestionAnswering
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    extras = set(mobilebert.hf_export_extras(jaxqa.load_pretrained(folder).config))
    assert bool(extras) == (option != "tiny")
    original, returned = model.state_dict(), back.state_dict()
    assert set(original) == set(returned)
    for key in set(original) - extras:
        assert torch.equal(original[key], returned[key]), key
    batch = random_batch(30522)
    for a, b in zip(torch_logits(model, batch), torch_logits(back, batch)):
        np.testing.assert_array_equal(a, b)


def test_dropout_only_when_not_deterministic():
    model = SpanModel(mobilebert.Config(**{**TINY, "hidden_dropout_prob": 0.1}))
    batch = random_batch(30522)
    params = models.init_params(model, jax.random.key(0))
    plain = model.apply({"params": params}, *batch)
    again = model.apply({"params": params}, *batch, deterministic=True)
    dropped = model.apply({"params": params}, *batch, deterministic=False, rngs={"dropout": jax.random.key(1)})
    np.testing.assert_array_equal(plain[0], again[0])
    assert np.abs(np.asarray(plain[0]) - np.asarray(dropped[0])).max() > 1e-6


def test_config_round_trips_through_hugging_face():
    for config in (mobilebert.SIZES["tiny"], mobilebert.Config(**OPTIONS["no_bottleneck"], **TINY)):
        hf = transformers.MobileBertConfig(**config.to_hf())
        assert hf.true_hidden_size == config.true_hidden_size
        assert mobilebert.Config.from_hf(hf.to_dict()) == config


def test_unsupported_config_fields_raise():
    hub = transformers.MobileBertConfig().to_dict()
    with pytest.raises(ConfigError, match="normalization_type"):
        mobilebert.Config.from_hf({**hub, "normalization_type": "batch_norm"})
    with pytest.raises(ConfigError, match="hidden_act"):
        mobilebert.Config.from_hf({**hub, "hidden_act": "softsign"})
    with pytest.raises(ConfigError, match="true_hidden_size"):
        mobilebert.Config.from_hf({**hub, "true_hidden_size": 256})
    with pytest.raises(ConfigError, match="num_attention_heads"):
        mobilebert.Config.from_hf({**hub, "num_attention_heads": 3})
    with pytest.raises(ConfigError, match="embedding_dim"):
        mobilebert.Config.from_hf({**hub, "embedding_dim": 128})


def test_unshared_query_key_needs_full_width_bottleneck():
    """The reference builds query/key for the narrow stream but feeds them the
    wide one, so it fails at the first forward; jaxqa refuses the config."""
    config = tiny(key_query_shared_bottleneck=False)
    with pytest.raises(ConfigError, match="key_query_shared_bottleneck"):
        mobilebert.Config.from_hf(config.to_dict())
    with pytest.raises(RuntimeError):
        torch_logits(qa_model(config), random_batch(30522))


def test_conversion_drops_only_what_the_reference_leaves_unused():
    model = seeded(transformers.MobileBertForPreTraining, tiny(use_bottleneck_attention=True))
    config = mobilebert.Config.from_hf(model.config.to_dict())
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    _, report = convert.params_from_hf("mobilebert", config, state)
    assert report.fresh_head
    unused = [
        n
        for n in report.dropped
        if not n.startswith(("cls.", "mobilebert.pooler.", "mobilebert.embeddings.position_ids"))
    ]
    assert sorted(unused) == sorted(mobilebert.hf_export_extras(config))  # bottleneck.attention of each layer
    del state["mobilebert.encoder.layer.1.output.bottleneck.dense.weight"]
    with pytest.raises(convert.ConversionError, match="output.bottleneck.dense.weight"):
        convert.params_from_hf("mobilebert", config, state)
