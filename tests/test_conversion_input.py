"""What `convert/pt2flax.py` reads and refuses: tensor names as `transformers`
reads them; hostile input (a one-line error naming the file, exit status 2,
nothing written and nothing lost); a source without a tokenizer; and the
permissions of what it writes."""

import json
import os
import stat
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest
from parity import pt2flax, seeded, torch, transformers
from squad_fixture import write_squad

import jaxqa
from jaxqa import checkpoint, models, predict, train
from jaxqa.models import bert, convert
from jaxqa.models.encoder import SpanModel

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


def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path, capsys, model):
    with torch.no_grad():
        model.bert.encoder.layer[1].attention.self.query.weight[0, 0] = float("nan")
    model.save_pretrained(tmp_path / "hf")
    capsys.readouterr()
    err = fails_cleanly(capsys, tmp_path / "hf", tmp_path / "out")
    assert str(tmp_path / "hf") in err and "layer_1/query/kernel holds NaN or infinite values" in err, err
    assert not (tmp_path / "out").exists()
    # A jaxqa folder holding one is refused on loading, naming its weights file.
    config = bert.Config(**TINY)
    params = jax.tree_util.tree_map(np.array, nn.meta.unbox(models.init_params(SpanModel(config), jax.random.key(0))))
    params["qa_outputs"]["bias"][1] = np.inf
    folder = jaxqa.save_pretrained(tmp_path / "ours", "bert", config, params, None)
    with pytest.raises(jaxqa.Error, match="params.safetensors: qa_outputs/bias holds NaN or infinite values"):
        jaxqa.load_pretrained(folder)


def test_an_integer_weight_is_refused_naming_it_and_half_floats_are_read_as_float32(tmp_path, capsys, model):
    import ml_dtypes
    from safetensors.numpy import load_file, save_file

    state = {k: v.numpy() for k, v in model.state_dict().items()}
    config = bert.Config.from_hf(model.config.to_dict())
    for dtype in (np.float16, ml_dtypes.bfloat16):
        folder = tmp_path / np.dtype(dtype).name
        model.config.save_pretrained(folder)
        save_file({k: v.astype(dtype) for k, v in state.items()}, str(folder / "model.safetensors"))
        upcast, _ = convert.params_from_hf(
            "bert", config, {k: v.astype(dtype).astype(np.float32) for k, v in state.items()}
        )
        read = checkpoint.open_checkpoint(folder).read_params()
        jax.tree_util.tree_map(np.testing.assert_array_equal, read, upcast)
    name = "bert.encoder.layer.1.attention.self.query.weight"
    hf = tmp_path / "int32"
    model.config.save_pretrained(hf)
    save_file({**state, name: state[name].astype(np.int32)}, str(hf / "model.safetensors"))
    err = fails_cleanly(capsys, hf, tmp_path / "out")
    assert f"{hf}: tensor '{name}' is int32: a weight must be floating point" in err, err
    assert not (tmp_path / "out").exists()
    # A jaxqa folder holding one is refused on loading, naming its weights file and the tensor.
    params = jax.tree_util.tree_map(np.array, nn.meta.unbox(models.init_params(SpanModel(config), jax.random.key(0))))
    folder = jaxqa.save_pretrained(tmp_path / "ours", "bert", config, params, None)
    tensors = load_file(str(folder / checkpoint.PARAMS_FILE))
    tensors["layer_0/query/bias"] = tensors["layer_0/query/bias"].astype(np.int32)
    save_file(tensors, str(folder / checkpoint.PARAMS_FILE))
    with pytest.raises(jaxqa.Error, match="params.safetensors: layer_0/query/bias is int32; a weight must be floating"):
        jaxqa.load_pretrained(folder)


def test_a_tensor_of_the_wrong_shape_is_named_with_the_shape_needed(model):
    state, config = state_and_config(model)
    name = "bert.encoder.layer.0.intermediate.dense.weight"
    assert state[name].shape == (64, 32)
    state[name] = state[name].T  # stored the other way round
    with pytest.raises(convert.ConversionError) as refused:
        convert.params_from_hf("bert", config, state)
    assert str(refused.value) == f"tensor {name!r} has shape (32, 64), but this config needs (64, 32)"


def test_a_tokenizer_larger_than_the_vocabulary_is_refused(tmp_path, capsys, hf_folder):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *(f"word{i}" for i in range(150))]
    (hf_folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    assert pt2flax.main([str(hf_folder), str(tmp_path / "out")]) == 0
    with pytest.raises(jaxqa.Error, match="the tokenizer has 155 tokens, more than the model's vocabulary of 100"):
        jaxqa.load_pretrained(tmp_path / "out").tokenizer
    capsys.readouterr()
    asked = ["--question", "word1?", "--context", "word2", "--precision", "fp32"]
    assert predict.main(["--checkpoint", str(tmp_path / "out"), *asked]) == 2
    err = capsys.readouterr().err
    assert "more than the model's vocabulary of 100 (vocab_size)" in err and err.count("\n") == 1


def test_an_encoder_without_a_span_head_is_no_teacher(tmp_path, capsys):
    squad = write_squad(tmp_path / "squad")
    encoder = seeded(transformers.BertModel, transformers.BertConfig(**{**TINY, "vocab_size": 200}))
    encoder.save_pretrained(tmp_path / "encoder")
    (tmp_path / "encoder" / "vocab.txt").write_text((squad.parent / "vocab.txt").read_text())
    capsys.readouterr()
    args = ["--model", "bert", "--config", "bert:tiny", "--tokenizer", str(squad.parent), "--train-file", str(squad)]
    assert (
        train.main(
            [*args, "--eval-file", "", "--run-dir", str(tmp_path / "run"), "--teacher", str(tmp_path / "encoder")]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "no span head" in err and "a teacher must be a question-answering model" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_a_folder_is_replaced_in_one_step_and_stale_temporaries_go(tmp_path, monkeypatch):
    out = tmp_path / "model"
    with checkpoint.atomic_folder(out) as tmp:
        (tmp / "weights").write_text("old")
    stale = tmp_path / ".model.99999999.dead"  # left by a killed export: no process has that pid
    stale.mkdir()
    (stale / "weights").write_text("half written")
    busy = tmp_path / f".model.{os.getpid()}.busy"  # a live process's, left alone
    busy.mkdir()
    with checkpoint.atomic_folder(out, overwrite=True) as tmp:
        (tmp / "weights").write_text("new")
    assert (out / "weights").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model", busy.name])
    # Where the folders cannot trade places in one step, three renames do it.
    monkeypatch.setattr(checkpoint, "_RENAME_EXCHANGE", 1 << 30)  # a flag renameat2 refuses (EINVAL)
    with checkpoint.atomic_folder(out, overwrite=True) as tmp:
        (tmp / "weights").write_text("newer")
    assert (out / "weights").read_text() == "newer"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model", busy.name])


class RunsCode:
    """A pickle that would run a command when loaded."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_would_run_code_is_refused_in_one_line(tmp_path, capsys, hf_folder):
    marker = tmp_path / "ran"
    (hf_folder / "model.safetensors").unlink()
    torch.save({"bert.embeddings.word_embeddings.weight": RunsCode(marker)}, hf_folder / "pytorch_model.bin")
    err = fails_cleanly(capsys, hf_folder, tmp_path / "out")
    assert "pytorch_model.bin: holds Python objects besides tensors, which could run code" in err, err
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_a_missing_folder_is_said_to_be_missing_first(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "JAX_PLATFORMS": "cpu"}
    asked = ["--checkpoint", "no-such-model", "--question", "Who?", "--context", "Ada."]
    done = subprocess.run([sys.executable, "-m", "jaxqa.predict", *asked], capture_output=True, text=True, env=env)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("jaxqa.predict: error: no-such-model: no such folder, nor a model on the")
