"""Compact BERT models: compaction is exact, nn_pruning's checkpoints import
compact, and compact models export where transformers can hold them."""

import json

import jax
import numpy as np
import pytest
from parity import flax2pt, pt2flax, random_batch, torch, torch_logits, transformers
from random_models import COMPACT as CONFIG
from random_models import random_params
from test_parity_bert import prune, qa_model, tiny

import jaxqa
from jaxqa.models import bert, compact
from jaxqa.models.encoder import SpanModel, per_layer, stacked


def logits(config, params, batch):
    """The logits of parameters one layer per name."""
    return np.stack([np.asarray(x) for x in SpanModel(config).apply({"params": stacked(config, params)}, *batch)])


@pytest.mark.parametrize("seed", [0, *(pytest.param(seed, marks=pytest.mark.slow) for seed in (1, 2))])
def test_compaction_is_exact_on_random_masks(seed):
    rng = np.random.default_rng(seed)
    params = random_params(CONFIG, seed)
    expected_heads, expected_units = [], []
    for i in range(CONFIG.num_hidden_layers):
        layer, n, h = params[f"layer_{i}"], CONFIG.heads(i), CONFIG.head_dim
        # Each head: kept, value columns zero (its bias still adds a constant), or output rows zero.
        fate = rng.integers(0, 3, n)
        for head, f in enumerate(fate):
            if f == 1:
                layer["value"]["kernel"][:, head * h : (head + 1) * h] = 0
            if f == 2:
                layer["attention_output"]["kernel"][head * h : (head + 1) * h] = 0
        # Scattered zeros that remove nothing.
        layer["query"]["kernel"][rng.random(layer["query"]["kernel"].shape) < 0.5] = 0
        # Each unit: kept, input column zero (its bias still adds act(bias) times its row), or output row zero.
        units = rng.integers(0, 3, CONFIG.intermediate_size)
        layer["intermediate"]["kernel"][:, units == 1] = 0
        layer["output"]["kernel"][units == 2] = 0
        expected_heads.append(int((fate == 0).sum()))
        expected_units.append(int((units == 0).sum()))
    small_config, small = compact.compact(CONFIG, stacked(CONFIG, params))
    assert [small_config.heads(i) for i in range(3)] == expected_heads
    assert [small_config.ffn(i) for i in range(3)] == expected_units
    batch = random_batch(CONFIG.vocab_size, length=16)
    np.testing.assert_allclose(
        logits(small_config, per_layer(small_config, small), batch), logits(CONFIG, params, batch), atol=2e-5, rtol=0
    )


def test_a_layer_may_lose_every_head_and_unit():
    params = random_params(CONFIG)
    layer = params["layer_0"]
    layer["attention_output"]["kernel"][:] = 0
    layer["intermediate"]["kernel"][:] = 0  # every unit adds its constant
    small_config, small = compact.compact(CONFIG, stacked(CONFIG, params))
    assert small_config.heads(0) == 0 and small_config.ffn(0) == 0
    assert dict(small_config.pruned_heads)[0] == (0, 1, 2, 3)
    batch = random_batch(CONFIG.vocab_size, length=16)
    np.testing.assert_allclose(
        logits(small_config, per_layer(small_config, small), batch), logits(CONFIG, params, batch), atol=2e-5, rtol=0
    )
    report = compact.report(CONFIG, small_config)
    assert report["after"]["heads"] == [0, 3, 4] and report["after"]["feed_forward_units"] == [0, 96, 96]
    assert report["after"]["parameters"] < report["before"]["parameters"]
    assert report["after"]["flops_per_sequence"] == bert.forward_flops(small_config, 384)


@pytest.mark.parametrize("mode", ["fp32", "bf16", "int8"])
def test_a_layer_without_heads_or_units_runs_in_every_precision(tmp_path, mode):
    params = random_params(CONFIG)
    params["layer_0"]["attention_output"]["kernel"][:] = 0
    params["layer_0"]["intermediate"]["kernel"][:] = 0
    small_config, small = compact.compact(CONFIG, stacked(CONFIG, params))
    assert small_config.heads(0) == 0 and small_config.ffn(0) == 0
    folder = jaxqa.save_pretrained(tmp_path / "compact", "bert", small_config, small, None)
    batch = random_batch(CONFIG.vocab_size, length=16)
    got = np.stack([np.asarray(x) for x in jaxqa.load_pretrained(folder, mode)(*batch)])
    real = np.broadcast_to(batch[1] > 0, got.shape)
    assert np.isfinite(got[real]).all()
    # As close to float32 as the mode's products are elsewhere (tests/test_precision.py).
    np.testing.assert_allclose(got[real], logits(CONFIG, params, batch)[real], atol=0.05 if mode != "fp32" else 2e-5)


def test_a_dense_model_stays_as_it_is():
    params = random_params(CONFIG)
    small_config, small = compact.compact(CONFIG, stacked(CONFIG, params))
    assert small_config == CONFIG
    jax.tree_util.tree_map(np.testing.assert_array_equal, per_layer(CONFIG, small), params)


def nn_pruning_checkpoint(tmp_path):
    """A tiny BERT as block-pruned checkpoints are published: heads cut out and
    listed in `pruned_heads`, the feed-forward at full width with zero rows and
    columns, some of them with a non-zero bias."""
    model = prune(qa_model(tiny(num_hidden_layers=3)), {0: [1, 3], 2: [0, 1, 2]})
    rng = np.random.default_rng(0)
    widths = []
    with torch.no_grad():
        for layer in model.bert.encoder.layer:
            fate = rng.integers(0, 3, 128)
            layer.intermediate.dense.weight[torch.as_tensor(fate == 1)] = 0  # (M, D): the unit's input
            layer.intermediate.dense.bias.normal_()
            layer.output.dense.weight[:, torch.as_tensor(fate == 2)] = 0  # (D, M): the unit's output
            widths.append(int((fate == 0).sum()))
    src = tmp_path / "hf"
    model.save_pretrained(src)
    return model, src, widths


def test_nn_pruning_checkpoint_imports_compact_and_exact(tmp_path):
    model, src, widths = nn_pruning_checkpoint(tmp_path)
    assert pt2flax.main([str(src), str(tmp_path / "compact"), "--compact"]) == 0
    ours = jaxqa.load_pretrained(tmp_path / "compact")
    assert ours.config.intermediate_sizes == tuple(widths)
    assert [ours.config.heads(i) for i in range(3)] == [2, 4, 1]
    assert json.loads((tmp_path / "compact" / "config.json").read_text())["intermediate_sizes"] == widths
    batch = random_batch(model.config.vocab_size)
    real = batch[1] == 1
    for mine, theirs in zip(ours(*batch), torch_logits(model, batch)):
        assert np.abs(np.asarray(mine) - theirs)[real].max() <= 1e-4


def test_export_of_a_pruned_model_says_what_to_do(tmp_path, capsys):
    _, src, widths = nn_pruning_checkpoint(tmp_path)
    assert pt2flax.main([str(src), str(tmp_path / "compact"), "--compact"]) == 0
    capsys.readouterr()
    assert flax2pt.main([str(tmp_path / "compact"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--pad" in err and "intermediate_sizes" in err
    assert not (tmp_path / "out").exists()

    assert flax2pt.main([str(tmp_path / "compact"), str(tmp_path / "out"), "--pad"]) == 0
    exported = transformers.BertForQuestionAnswering.from_pretrained(tmp_path / "out")
    assert exported.config.intermediate_size == max(widths) and not exported.config.pruned_heads
    batch = random_batch(exported.config.vocab_size)
    real = batch[1] == 1
    for mine, theirs in zip(jaxqa.load_pretrained(tmp_path / "compact")(*batch), torch_logits(exported, batch)):
        assert np.abs(np.asarray(mine) - theirs)[real].max() <= 1e-4


def test_compact_refuses_other_families(tmp_path, capsys):
    model = transformers.DistilBertForQuestionAnswering(
        transformers.DistilBertConfig(vocab_size=100, dim=32, n_layers=1, n_heads=2, hidden_dim=64)
    )
    model.save_pretrained(tmp_path / "hf")
    assert pt2flax.main([str(tmp_path / "hf"), str(tmp_path / "out"), "--compact"]) == 2
    assert "--compact" in capsys.readouterr().err and not (tmp_path / "out").exists()
