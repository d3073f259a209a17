"""DistilBERT: jaxqa against `transformers` PyTorch."""

import json

import flax.linen as nn
import jax
import numpy as np
import pytest
from flax import traverse_util
from parity import (
    assert_padding_invariant,
    bf16_relative_error,
    flax2pt,
    max_diff,
    param_count,
    pt2flax,
    random_batch,
    save_and_convert,
    seeded,
    torch,
    torch_logits,
    transformers,
)

import jaxqa
from jaxqa import models
from jaxqa.models import ConfigError, distilbert
from jaxqa.models.encoder import SpanModel

TINY = dict(dim=64, n_layers=2, n_heads=4, hidden_dim=128)
BASE_PARAMS = 66_364_418  # distilbert-base-uncased with the span head


def tiny(**overrides):
    return transformers.DistilBertConfig(**{**TINY, **overrides})


def qa_model(config, seed=0):
    return seeded(transformers.DistilBertForQuestionAnswering, config, seed)


def test_tiny_matches_pytorch(tmp_path):
    assert max_diff(qa_model(tiny()), tmp_path) <= 1e-4


def test_sinusoidal_positions_match_pytorch(tmp_path):
    model = qa_model(tiny(sinusoidal_pos_embds=True))
    assert max_diff(model, tmp_path) <= 1e-4
    # The table is computed, not stored, and it is the reference's.
    ours = jaxqa.load_pretrained(tmp_path / "model-jaxqa")
    assert "position_embeddings" not in ours.params["embeddings"]
    table = model.distilbert.embeddings.position_embeddings.weight.detach().numpy()
    np.testing.assert_array_equal(distilbert.sinusoidal_table(*table.shape), table)


def test_a_stored_table_that_is_not_sinusoidal_is_refused(tmp_path):
    model = qa_model(tiny(sinusoidal_pos_embds=True))
    with torch.no_grad():
        model.distilbert.embeddings.position_embeddings.weight.add_(0.5)
    model.save_pretrained(tmp_path / "hf")
    assert pt2flax.main([str(tmp_path / "hf"), str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("act", ["gelu_new", "relu", "silu"])
def test_activations_match_pytorch(tmp_path, act):
    assert max_diff(qa_model(tiny(activation=act)), tmp_path) <= 1e-4


def test_other_depths_and_sizes_match_pytorch(tmp_path):
    config = tiny(n_layers=3, n_heads=2, hidden_dim=96, max_position_embeddings=64)
    assert max_diff(qa_model(config), tmp_path) <= 1e-4


def test_token_types_are_ignored(tmp_path):
    ours = jaxqa.load_pretrained(save_and_convert(qa_model(tiny()), tmp_path))
    ids, mask, types = random_batch(30522)
    for a, b in zip(ours(ids, mask, types), ours(ids, mask, np.zeros_like(types))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_hub_config_keys_are_accepted(tmp_path):
    # distilbert-base-uncased's config.json as the hub serves it, legacy keys included.
    hub = {
        "activation": "gelu",
        "architectures": ["DistilBertForMaskedLM"],
        "attention_dropout": 0.1,
        "dim": 768,
        "dropout": 0.1,
        "hidden_dim": 3072,
        "initializer_range": 0.02,
        "max_position_embeddings": 512,
        "model_type": "distilbert",
        "n_heads": 12,
        "n_layers": 6,
        "pad_token_id": 0,
        "qa_dropout": 0.1,
        "seq_classif_dropout": 0.2,
        "sinusoidal_pos_embds": False,
        "tie_weights_": True,
        "transformers_version": "4.10.0.dev0",
        "vocab_size": 30522,
    }
    assert distilbert.Config.from_hf(hub) == distilbert.SIZES["base"]
    with pytest.raises(ConfigError, match="activation"):
        distilbert.Config.from_hf({**hub, "activation": "swiglu"})
    with pytest.raises(ConfigError, match="n_heads"):
        distilbert.Config.from_hf({**hub, "n_heads": 7})
    with pytest.raises(ConfigError, match="hidden_size"):
        distilbert.Config.from_hf({**hub, "hidden_size": 768})  # not a DistilBERT key


def test_padding_does_not_change_real_logits(tmp_path):
    assert_padding_invariant(jaxqa.load_pretrained(save_and_convert(qa_model(tiny()), tmp_path)))


def test_masked_lm_checkpoint_gets_a_fresh_head(tmp_path, capsys):
    mlm = seeded(transformers.DistilBertForMaskedLM, tiny())  # how the published checkpoint is saved
    mlm.save_pretrained(tmp_path / "mlm")
    assert pt2flax.main([str(tmp_path / "mlm"), str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "no span head" in err and "vocab_" in err
    ours = jaxqa.load_pretrained(tmp_path / "out")
    hidden = (
        mlm.distilbert(
            input_ids=torch.as_tensor(random_batch(30522)[0], dtype=torch.long),
            attention_mask=torch.as_tensor(random_batch(30522)[1], dtype=torch.long),
        )[0]
        .detach()
        .numpy()
    )
    batch = random_batch(30522)
    real = batch[1] == 1
    assert np.abs(np.asarray(ours.encode(*batch)) - hidden)[real].max() <= 1e-4


@pytest.mark.slow
def test_base_matches_pytorch_and_counts_parameters(tmp_path):
    model = qa_model(transformers.DistilBertConfig())
    assert param_count(model) == BASE_PARAMS
    assert max_diff(model, tmp_path) <= 1e-4
    ours = jaxqa.load_pretrained(tmp_path / "model-jaxqa")
    assert ours.config == distilbert.SIZES["base"]
    assert sum(x.size for x in jax.tree_util.tree_leaves(ours.params)) == BASE_PARAMS


def test_eval_shape_of_full_size_model():
    shapes = models.abstract_params(SpanModel(distilbert.SIZES["base"]))
    leaves = traverse_util.flatten_dict(nn.meta.unbox(shapes))
    assert sum(np.prod(x.shape) for x in leaves.values()) == BASE_PARAMS
    specs = traverse_util.flatten_dict(nn.get_partition_spec(shapes))
    assert all(len(specs[k]) == len(v.shape) for k, v in leaves.items())
    assert tuple(specs[("layers", "0_to_5", "q_lin", "kernel")]) == ("layers", "embed", "heads")
    assert tuple(specs[("layers", "0_to_5", "lin1", "kernel")]) == ("layers", "embed", "mlp")


def test_bfloat16_stays_close_to_float32(tmp_path):
    relative = bf16_relative_error(save_and_convert(qa_model(tiny(n_layers=4)), tmp_path))
    assert relative < 0.02, relative


@pytest.mark.parametrize("sinusoidal", [False, True])
def test_round_trip_gives_back_the_same_tensors(tmp_path, sinusoidal):
    model = qa_model(tiny(sinusoidal_pos_embds=sinusoidal))
    folder = save_and_convert(model, tmp_path)
    assert json.loads((folder / "config.json").read_text())["model_type"] == "distilbert"
    assert flax2pt.main([str(folder), str(tmp_path / "back")]) == 0
    back, info = transformers.AutoModelForQuestionAnswering.from_pretrained(tmp_path / "back", output_loading_info=True)
    assert type(back) is transformers.DistilBertForQuestionAnswering
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    original, returned = model.state_dict(), back.state_dict()
    assert set(original) == set(returned)
    for key in original:
        assert torch.equal(original[key], returned[key]), key
    batch = random_batch(30522)
    for a, b in zip(torch_logits(model, batch), torch_logits(back, batch)):
        np.testing.assert_array_equal(a, b)
