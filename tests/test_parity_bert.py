"""BERT: jaxqa against `transformers` PyTorch, and the conversion CLIs around it."""

import json
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest
from flax import traverse_util
from parity import (
    ROOT,
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
from jaxqa.models import ConfigError, bert
from jaxqa.models.encoder import SpanModel

TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)


def tiny(**overrides):
    return transformers.BertConfig(**{**TINY, **overrides})


def qa_model(config, seed=0):
    return seeded(transformers.BertForQuestionAnswering, config, seed)


def test_tiny_matches_pytorch(tmp_path):
    assert max_diff(qa_model(tiny()), tmp_path) <= 1e-4


@pytest.mark.parametrize("act", ["gelu", "gelu_new", "relu", "silu", "gelu_pytorch_tanh", "quick_gelu", "tanh"])
def test_activations_match_pytorch(tmp_path, act):
    assert max_diff(qa_model(tiny(hidden_act=act)), tmp_path) <= 1e-4


def test_other_sizes_and_eps_match_pytorch(tmp_path):
    config = tiny(
        num_hidden_layers=3, num_attention_heads=2, type_vocab_size=3, layer_norm_eps=1e-5, max_position_embeddings=64
    )
    assert max_diff(qa_model(config), tmp_path) <= 1e-4


def prune(model, pruned: dict[int, list[int]]):
    """Removes heads as block-pruned checkpoints do: the rows of q/k/v and the
    columns of the attention output of each pruned head are cut out."""
    head_dim = model.config.hidden_size // model.config.num_attention_heads
    for layer, heads in pruned.items():
        kept = [h for h in range(model.config.num_attention_heads) if h not in heads]
        index = torch.cat([torch.arange(h * head_dim, (h + 1) * head_dim) for h in kept])
        block = model.bert.encoder.layer[layer].attention
        for name in ("query", "key", "value"):
            old = getattr(block.self, name)
            new = torch.nn.Linear(old.in_features, len(index))
            new.weight.data, new.bias.data = old.weight.data[index].clone(), old.bias.data[index].clone()
            setattr(block.self, name, new)
        old = block.output.dense
        new = torch.nn.Linear(len(index), old.out_features)
        new.weight.data, new.bias.data = old.weight.data[:, index].clone(), old.bias.data.clone()
        block.output.dense = new
    model.config.pruned_heads = dict(pruned)
    return model


def test_pruned_heads_match_pytorch(tmp_path):
    model = prune(qa_model(tiny(num_hidden_layers=3)), {0: [1, 3], 2: [0, 1, 2]})
    out = save_and_convert(model, tmp_path)
    ours = jaxqa.load_pretrained(out)
    assert [ours.config.heads(i) for i in range(3)] == [2, 4, 1]
    assert ours.params["layers"]["2_to_2"]["query"]["kernel"].shape == (1, 64, 16)  # a run of its own
    batch = random_batch(model.config.vocab_size)
    real = batch[1] == 1
    for mine, theirs in zip(ours(*batch), torch_logits(model, batch)):
        assert np.abs(np.asarray(mine) - theirs)[real].max() <= 1e-4


def test_padding_does_not_change_real_logits(tmp_path):
    assert_padding_invariant(jaxqa.load_pretrained(save_and_convert(qa_model(tiny()), tmp_path)))


@pytest.mark.slow
def test_base_matches_pytorch_and_counts_parameters(tmp_path):
    model = qa_model(transformers.BertConfig())
    assert param_count(model) == 108_893_186
    assert max_diff(model, tmp_path) <= 1e-4
    ours = jaxqa.load_pretrained(tmp_path / "model-jaxqa")
    assert sum(x.size for x in jax.tree_util.tree_leaves(ours.params)) == param_count(model)


def test_eval_shape_of_full_size_models():
    for name, count in [("base", 108_893_186), ("large", 334_094_338)]:
        shapes = models.abstract_params(SpanModel(bert.SIZES[name]))
        assert sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(nn.meta.unbox(shapes))) == count
    # Every weight carries logical axis names, one per dimension.
    specs = traverse_util.flatten_dict(nn.get_partition_spec(shapes))
    leaves = traverse_util.flatten_dict(nn.meta.unbox(shapes))
    assert all(len(specs[k]) == len(v.shape) for k, v in leaves.items())
    assert tuple(specs[("layers", "0_to_23", "query", "kernel")]) == ("layers", "embed", "heads")


def test_bfloat16_stays_close_to_float32(tmp_path):
    relative = bf16_relative_error(save_and_convert(qa_model(tiny(num_hidden_layers=4)), tmp_path))
    assert relative < 0.05, relative


def test_round_trip_gives_back_the_same_tensors(tmp_path):
    model = qa_model(tiny())
    folder = save_and_convert(model, tmp_path)
    assert flax2pt.main([str(folder), str(tmp_path / "back")]) == 0
    back, info = transformers.AutoModelForQuestionAnswering.from_pretrained(tmp_path / "back", output_loading_info=True)
    assert type(back) is transformers.BertForQuestionAnswering
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    original, returned = model.state_dict(), back.state_dict()
    assert set(original) == set(returned)
    for key in original:
        assert torch.equal(original[key], returned[key]), key


def test_base_model_gets_a_fresh_head_and_says_so(tmp_path, capsys):
    encoder = seeded(transformers.BertModel, tiny())  # with a pooler, no span head
    encoder.save_pretrained(tmp_path / "enc")
    assert pt2flax.main([str(tmp_path / "enc"), str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "no span head" in err and "pooler" in err
    ours = jaxqa.load_pretrained(tmp_path / "out")
    batch = random_batch(30522)
    with torch.no_grad():
        hidden = encoder(*(torch.as_tensor(x, dtype=torch.long) for x in batch)).last_hidden_state.numpy()
    real = batch[1] == 1
    assert np.abs(np.asarray(ours.encode(*batch)) - hidden)[real].max() <= 1e-4


def test_pytorch_bin_checkpoint_converts(tmp_path):
    model = qa_model(tiny())
    model.save_pretrained(tmp_path / "bin", safe_serialization=False) if _has_safe_flag() else _save_bin(
        model, tmp_path / "bin"
    )
    assert (tmp_path / "bin" / "pytorch_model.bin").is_file()
    assert pt2flax.main([str(tmp_path / "bin"), str(tmp_path / "out")]) == 0
    batch = random_batch(30522)
    ours = jaxqa.load_pretrained(tmp_path / "out")
    for mine, theirs in zip(ours(*batch), torch_logits(model, batch)):
        assert np.abs(np.asarray(mine) - theirs)[batch[1] == 1].max() <= 1e-4


def _has_safe_flag() -> bool:
    import inspect

    return "safe_serialization" in inspect.signature(transformers.PreTrainedModel.save_pretrained).parameters


def _save_bin(model, folder):
    folder.mkdir(parents=True)
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")


def test_hub_style_config_fields_are_checked():
    with pytest.raises(ConfigError, match="hidden_act"):
        bert.Config.from_hf({"model_type": "bert", "hidden_act": "softsign"})
    with pytest.raises(ConfigError, match="position_embedding_type"):
        bert.Config.from_hf({"model_type": "bert", "position_embedding_type": "relative_key"})
    with pytest.raises(ConfigError, match="rotary_dim"):
        bert.Config.from_hf({"model_type": "bert", "rotary_dim": 8})
    with pytest.raises(ConfigError, match="id2label"):
        bert.Config.from_hf({"model_type": "bert", "id2label": {"0": "a", "1": "b", "2": "c"}})


# --- bad input: a one-line error naming what is wrong, and no OUT left behind


def run_cli(*args):
    return subprocess.run(
        [sys.executable, str(ROOT / "convert" / "pt2flax.py"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def hf_folder(tmp_path):
    folder = tmp_path / "hf"
    qa_model(tiny()).save_pretrained(folder)
    return folder


def _bad_inputs(hf_folder):
    config = json.loads((hf_folder / "config.json").read_text())
    weights = (hf_folder / "model.safetensors").read_bytes()
    yield "no weights", lambda: (hf_folder / "model.safetensors").unlink(), "no weights"
    yield (
        "unknown model_type",
        lambda: (hf_folder / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"})),
        "gpt2",
    )
    yield (
        "truncated weights",
        lambda: (hf_folder / "model.safetensors").write_bytes(weights[: len(weights) // 2]),
        "model.safetensors",
    )
    yield (
        "wrong shape",
        lambda: (hf_folder / "config.json").write_text(json.dumps({**config, "intermediate_size": 96})),
        "intermediate.dense",
    )
    yield (
        "unsupported field",
        lambda: (hf_folder / "config.json").write_text(
            json.dumps({**config, "position_embedding_type": "relative_key"})
        ),
        "position_embedding_type",
    )


@pytest.mark.parametrize("case", range(5))
def test_bad_input_fails_cleanly(tmp_path, hf_folder, case):
    name, spoil, expected = list(_bad_inputs(hf_folder))[case]
    spoil()
    out = tmp_path / "out"
    result = run_cli(hf_folder, out)
    assert result.returncode == 2, (name, result.stderr)
    assert expected in result.stderr, (name, result.stderr)
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not out.exists() and not any(p.name.startswith(".out") for p in tmp_path.iterdir())


def test_existing_output_is_not_overwritten(tmp_path, hf_folder):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert pt2flax.main([str(hf_folder), str(out)]) == 2
    assert (out / "keep.txt").read_text() == "mine"
