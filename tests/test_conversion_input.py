"""What `convert/pt2flax.py` reads and refuses: tensor names as `transformers`
reads them; hostile input (a one-line error naming the file, exit status 2,
nothing written and nothing lost); a source without a tokenizer; and the
permissions of what it writes."""

import json
import os
import stat

import jax
import numpy as np
import pytest
from parity import pt2flax, seeded, torch, transformers

import jaxqa
from jaxqa.models import bert, convert

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=100)
SHARD = "model-00001-of-00001.safetensors"


@pytest.fixture
def model():
    return seeded(transformers.BertForQuestionAnswering, transformers.BertConfig(**TINY))


@pytest.fixture
def hf_folder(tmp_path, capsys, model):
    folder = tmp_path / "hf"
    model.save_pretrained(folder)
    capsys.readouterr()  # its progress bar
    return folder


def state_and_config(model):
    return {k: v.numpy() for k, v in model.state_dict().items()}, bert.Config.from_hf(model.config.to_dict())


def test_legacy_layer_norm_names_are_read_as_transformers_reads_them(model):
    state, config = state_and_config(model)
    legacy = {
        k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
        for k, v in state.items()
    }
    assert sum(k.endswith("LayerNorm.gamma") for k in legacy) == 5  # embeddings, 2 per layer
    expected, _ = convert.params_from_hf("bert", config, state)
    got, _ = convert.params_from_hf("bert", config, legacy)
    jax.tree_util.tree_map(np.testing.assert_array_equal, got, expected)
    # The same tensor under both names is ambiguous.
    both = {**state, "bert.embeddings.LayerNorm.gamma": state["bert.embeddings.LayerNorm.weight"]}
    with pytest.raises(
        convert.ConversionError, match="'bert.embeddings.LayerNorm.weight' and 'bert.embeddings.LayerNorm.gamma'"
    ):
        convert.params_from_hf("bert", config, both)


def test_a_missing_tensor_is_named_with_the_closest_unused_ones(model):
    state, config = state_and_config(model)
    state["bert.encoder.layer.1.output.LayerNorm.g"] = state.pop("bert.encoder.layer.1.output.LayerNorm.weight")
    # Not a rename transformers makes, so not one jaxqa makes.
    with pytest.raises(convert.ConversionError) as info:
        convert.params_from_hf("bert", config, state)
    message = str(info.value)
    assert message.startswith("missing tensor(s) 'bert.encoder.layer.1.output.LayerNorm.weight' (closest unused: ")
    assert "'bert.encoder.layer.1.output.LayerNorm.g'" in message and "\n" not in message


def fails_cleanly(capsys, src, out, *flags) -> str:
    """Runs the CLI and checks that it failed with one line and left no temporary
    folder; returns that line."""
    assert pt2flax.main([str(src), str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert not any(p.name.startswith(f".{out.name}.") for p in out.parent.iterdir())
    return err


def sharded(folder, index) -> None:
    """Makes the folder's weights one shard with `index` (a dict, or raw text) as its index."""
    (folder / "model.safetensors").rename(folder / SHARD)
    text = index if isinstance(index, str) else json.dumps(index)
    (folder / "model.safetensors.index.json").write_text(text)


def test_a_sharded_checkpoint_converts(tmp_path, hf_folder, model):
    sharded(hf_folder, {"metadata": {}, "weight_map": dict.fromkeys(model.state_dict(), SHARD)})
    assert pt2flax.main([str(hf_folder), str(tmp_path / "out")]) == 0


@pytest.mark.parametrize(
    "index, message",
    [
        ("{not json", "not valid JSON"),
        ('["a list"]', "no 'weight_map'"),
        ({"metadata": {}}, "no 'weight_map'"),
        ({"weight_map": {"bert.embeddings.word_embeddings.weight": 3}}, "no 'weight_map'"),
        (
            {"weight_map": {"bert.pooler.dense.weight": "model-00002-of-00002.safetensors"}},
            "'model-00002-of-00002.safetensors'",
        ),
    ],
)
def test_a_malformed_shard_index(tmp_path, capsys, hf_folder, index, message):
    sharded(hf_folder, index)
    err = fails_cleanly(capsys, hf_folder, tmp_path / "out")
    assert "model.safetensors.index.json" in err and message in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "contents, message",
    [
        (lambda state: {"model": state}, "'model' is not a tensor (it is OrderedDict)"),
        (lambda state: {**state, "step": 3}, "'step' is not a tensor (it is int)"),
        (lambda state: list(state.values()), "holds a list, not a state dict"),
    ],
)
def test_a_torch_file_that_is_not_a_flat_state_dict(tmp_path, capsys, hf_folder, model, contents, message):
    (hf_folder / "model.safetensors").unlink()
    torch.save(contents(model.state_dict()), hf_folder / "pytorch_model.bin")
    err = fails_cleanly(capsys, hf_folder, tmp_path / "out")
    assert "pytorch_model.bin" in err and message in err, err
    assert not (tmp_path / "out").exists()


def test_an_output_that_is_a_file_is_left_alone(tmp_path, capsys, hf_folder):
    out = tmp_path / "out"
    out.write_text("mine")
    for flags in ([], ["--overwrite"]):
        err = fails_cleanly(capsys, hf_folder, out, *flags)
        assert str(out) in err and "is a file" in err, err
        assert out.read_text() == "mine"


def test_a_source_without_tokenizer_is_converted_with_a_warning(tmp_path, capsys, hf_folder):
    out = tmp_path / "out"
    assert pt2flax.main([str(hf_folder), str(out)]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "tokenizer" in line]
    assert len(warnings) == 1, warnings
    assert (
        str(hf_folder) in warnings[0]
        and "tokenizer.json or vocab.txt" in warnings[0]
        and "jaxqa.pipeline" in warnings[0]
    )
    assert (out / "params.safetensors").is_file()
    with pytest.raises(jaxqa.Error, match="tokenizer.json or vocab.txt"):
        jaxqa.load_pretrained(out).tokenizer


def test_a_source_with_a_tokenizer_gets_no_warning(tmp_path, capsys, hf_folder):
    (hf_folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a"]) + "\n")
    assert pt2flax.main([str(hf_folder), str(tmp_path / "out")]) == 0
    assert "tokenizer" not in capsys.readouterr().err
    assert (tmp_path / "out" / "vocab.txt").is_file()


def test_the_output_follows_the_umask(tmp_path, hf_folder):
    saved = os.umask(0o022)
    try:
        assert pt2flax.main([str(hf_folder), str(tmp_path / "out")]) == 0
    finally:
        os.umask(saved)
    out = tmp_path / "out"
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    for path in out.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) & 0o044 == 0o044, path  # readable by group and others
