"""SqueezeBERT: jaxqa against `transformers` PyTorch, and its grouped layers."""

import flax.linen as nn
import jax
import jax.numpy as jnp
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
    pt2flax,
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
from jaxqa.models import ConfigError, squeezebert
from jaxqa.models.encoder import SpanModel
from jaxqa.models.execution import Execution

TINY = dict(hidden_size=64, embedding_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
BASE_PARAMS = 50_500_610  # squeezebert-uncased with the span head, without the unused pooler (PyTorch: 51_091_202)
GROUP_FIELDS = ("q_groups", "k_groups", "v_groups", "post_attention_groups", "intermediate_groups", "output_groups")


def tiny(**overrides):
    return transformers.SqueezeBertConfig(**{**TINY, **overrides})


def qa_model(config, seed=0):
    return seeded(transformers.SqueezeBertForQuestionAnswering, config, seed)


def test_tiny_matches_pytorch(tmp_path):
    assert tuple(getattr(tiny(), f) for f in GROUP_FIELDS) == (4, 4, 4, 1, 4, 4)  # the published groups
    assert max_diff(qa_model(tiny()), tmp_path) <= 1e-4


def test_resaved_by_transformers_matches_pytorch(tmp_path):
    model = reloaded(qa_model(tiny()), tmp_path / "first")
    diff = max_diff(model, tmp_path)  # saved again to tmp_path / "model-hf"
    assert_legacy_names(tmp_path / "model-hf")
    print(f"max |diff| {diff:.1e}")
    assert diff <= 1e-4


@pytest.mark.parametrize("groups", [(1, 1, 1, 1, 1, 1), (2, 8, 2, 8, 2, 8), (8, 1, 2, 4, 8, 2)])
def test_group_counts_match_pytorch(tmp_path, groups):
    assert max_diff(qa_model(tiny(**dict(zip(GROUP_FIELDS, groups)))), tmp_path) <= 1e-4


@pytest.mark.parametrize("act", ["gelu_new", "relu", "silu"])
def test_activations_match_pytorch(tmp_path, act):
    assert max_diff(qa_model(tiny(hidden_act=act)), tmp_path) <= 1e-4


def test_other_sizes_match_pytorch(tmp_path):
    config = tiny(num_hidden_layers=3, num_attention_heads=2, type_vocab_size=3, max_position_embeddings=64)
    assert max_diff(qa_model(config), tmp_path) <= 1e-4


def test_layer_norm_eps_reaches_only_the_embeddings(tmp_path, monkeypatch):
    # The reference's encoder LayerNorms keep epsilon 1e-12 whatever `layer_norm_eps` says.
    model = qa_model(tiny(layer_norm_eps=1e-3))
    assert max_diff(model, tmp_path / "right") <= 1e-4
    # Using the config's epsilon there instead is a difference the tolerance sees.
    monkeypatch.setattr(squeezebert, "ENCODER_LAYER_NORM_EPS", 1e-3)
    models.forward.cache_clear()  # the programs compiled for this config hold the constant as it was
    assert max_diff(model, tmp_path / "wrong") > 1e-4


def test_grouped_dense_matches_torch_conv1d():
    conv = torch.nn.Conv1d(48, 96, kernel_size=1, groups=4)
    x = np.random.default_rng(0).standard_normal((2, 5, 48)).astype(np.float32)  # (B, T, C)
    with torch.no_grad():
        theirs = conv(torch.from_numpy(x).permute(0, 2, 1)).permute(0, 2, 1).numpy()  # NCW in, (B, T, C) out
    layer = squeezebert.GroupedDense(96, 4, "mlp", 0.02, jnp.float32, jnp.float32)
    # Conv1d weight (out, in/G, 1): group g's rows are out channels [g*O, (g+1)*O).
    kernel = conv.weight.detach().numpy().reshape(4, 24, 12).transpose(0, 2, 1)  # (G, I, O)
    mine = layer.apply({"params": {"kernel": kernel, "bias": conv.bias.detach().numpy()}}, x)
    np.testing.assert_allclose(mine, theirs, atol=1e-5)


def test_grouped_layers_lower_to_dot_products():
    model = SpanModel(squeezebert.SIZES["tiny"], execution=Execution(scan=False))  # each layer in the program
    params = nn.meta.unbox(models.abstract_params(model))  # shapes are all lowering needs
    lowered = jax.jit(model.apply).lower({"params": params}, *random_batch(30522))
    stablehlo, compiled = lowered.as_text(debug_info=True), lowered.compile().as_text()
    assert "convolution" not in stablehlo and "convolution" not in compiled
    for i in range(2):
        for name in ("query", "key", "value", "post_attention", "intermediate", "output"):
            assert f"layer_{i}/{name}/BTGI,GIO->BTGO/dot_general" in stablehlo, (i, name)


def test_padding_does_not_change_real_logits(tmp_path):
    assert_padding_invariant(jaxqa.load_pretrained(save_and_convert(qa_model(tiny()), tmp_path)))


@pytest.mark.slow
def test_base_matches_pytorch_and_counts_parameters(tmp_path):
    model = qa_model(transformers.SqueezeBertConfig())
    d = model.config.hidden_size
    assert param_count(model) == BASE_PARAMS + d * d + d  # PyTorch also holds the pooler
    assert max_diff(model, tmp_path) <= 1e-4
    ours = jaxqa.load_pretrained(tmp_path / "model-jaxqa")
    assert ours.config == squeezebert.SIZES["base"]
    assert sum(x.size for x in jax.tree_util.tree_leaves(ours.params)) == BASE_PARAMS


def test_eval_shape_of_full_size_model():
    shapes = models.abstract_params(SpanModel(squeezebert.SIZES["base"]))
    leaves = traverse_util.flatten_dict(nn.meta.unbox(shapes))
    assert sum(np.prod(x.shape) for x in leaves.values()) == BASE_PARAMS
    # Every weight carries logical axis names, one per dimension.
    specs = traverse_util.flatten_dict(nn.get_partition_spec(shapes))
    assert all(len(specs[k]) == len(v.shape) for k, v in leaves.items())
    layers = ("layers", "0_to_11")  # the twelve layers, stacked
    assert leaves[(*layers, "query", "kernel")].shape == (12, 4, 192, 192)
    assert tuple(specs[(*layers, "query", "kernel")]) == ("layers", "groups", "kernel_in", "heads")
    assert tuple(specs[(*layers, "intermediate", "kernel")]) == ("layers", "groups", "kernel_in", "mlp")
    assert tuple(specs[(*layers, "output", "kernel")]) == ("layers", "groups", "kernel_in", "embed")


def test_bfloat16_stays_close_to_float32(tmp_path):
    relative = bf16_relative_error(save_and_convert(qa_model(tiny(num_hidden_layers=4)), tmp_path))
    assert relative < 0.02, relative  # measured 0.005


def test_round_trip_gives_back_the_same_tensors(tmp_path):
    model = qa_model(tiny())
    folder = save_and_convert(model, tmp_path)
    assert flax2pt.main([str(folder), str(tmp_path / "back")]) == 0
    back, info = transformers.AutoModelForQuestionAnswering.from_pretrained(tmp_path / "back", output_loading_info=True)
    assert type(back) is transformers.SqueezeBertForQuestionAnswering
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    original, returned = model.state_dict(), back.state_dict()
    assert set(original) == set(returned)
    for key in original:
        if not key.startswith("transformer.pooler."):  # jaxqa does not keep it; the export makes a fresh one
            assert torch.equal(original[key], returned[key]), key
    assert returned["transformer.pooler.dense.weight"].std() == pytest.approx(0.02, rel=0.1)
    batch = random_batch(30522)
    for a, b in zip(torch_logits(model, batch), torch_logits(back, batch)):
        np.testing.assert_array_equal(a, b)


def test_masked_lm_checkpoint_gets_a_fresh_head(tmp_path, capsys):
    mlm = seeded(transformers.SqueezeBertForMaskedLM, tiny())  # how the published checkpoint is saved
    mlm.save_pretrained(tmp_path / "mlm")
    assert pt2flax.main([str(tmp_path / "mlm"), str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "no span head" in err and "cls" in err
    ours = jaxqa.load_pretrained(tmp_path / "out")
    batch = random_batch(30522)
    with torch.no_grad():
        hidden = mlm.transformer(*(torch.as_tensor(x, dtype=torch.long) for x in batch)).last_hidden_state.numpy()
    real = batch[1] == 1
    assert np.abs(np.asarray(ours.encode(*batch)) - hidden)[real].max() <= 1e-4


def test_config_fields_jaxqa_cannot_honour():
    with pytest.raises(ConfigError, match="hidden_act"):
        squeezebert.Config.from_hf({"model_type": "squeezebert", "hidden_act": "softsign"})
    with pytest.raises(ConfigError, match="embedding_size"):
        squeezebert.Config.from_hf({"model_type": "squeezebert", "embedding_size": 128})
    with pytest.raises(ConfigError, match="intermediate_groups"):
        squeezebert.Config.from_hf({"model_type": "squeezebert", "intermediate_groups": 5})
    with pytest.raises(ConfigError, match="position_embedding_type"):
        squeezebert.Config.from_hf({"model_type": "squeezebert", "position_embedding_type": "relative_key"})
    with pytest.raises(ConfigError, match="attention_type"):
        squeezebert.Config.from_hf({"model_type": "squeezebert", "attention_type": "block_sparse"})
    # What `transformers` writes for its default config is all understood.
    hf = transformers.SqueezeBertConfig().to_dict()
    assert squeezebert.Config.from_hf(hf) == squeezebert.SIZES["base"]
    back = transformers.SqueezeBertConfig(**squeezebert.SIZES["base"].to_hf())
    assert squeezebert.Config.from_hf(back.to_dict()) == squeezebert.SIZES["base"]
