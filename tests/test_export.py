"""ONNX exports: the program jaxqa runs, written op by op, gives jaxqa's logits
under ONNX Runtime for every family and compact models (one with a layer of
no heads and a layer of no feed-forward units), at any batch and
length; int8 stays close; served back, an export answers as jaxqa does."""

import collections
import dataclasses
import json
import shutil
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest
from export_checks import (
    assert_int8_near_float32,
    assert_int8_runs_near_float32,
    assert_records_refused,
    assert_served_as_jaxqa,
    reversed_record_binds_by_name,
)
from jax import export as jax_export
from random_models import FAMILY_MODELS, compact_model, family_model, windows

pytest.importorskip("onnxruntime", reason="the ONNX export is the optional extra jaxqa[onnx]")
import onnxruntime
from safetensors.numpy import save_file

import jaxqa
from jaxqa import models
from jaxqa.export import graph, write
from jaxqa.models import bert
from jaxqa.models import convert as hf_names
from jaxqa.models.encoder import SpanModel


def session(proto):
    return onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def run(sess, batch):
    return sess.run(None, dict(zip(write.INPUTS, batch)))


@pytest.mark.parametrize("name", FAMILY_MODELS)
def test_an_export_gives_jaxqas_logits_at_every_batch_and_length(name):
    config, params = family_model(name)
    sess = session(write.span_model_onnx(config, params))
    for batch, length in ((1, 16), (3, 40)):
        inputs = windows(config.vocab_size, batch, length)
        want = SpanModel(config).apply({"params": params}, *inputs)
        for got, expected in zip(run(sess, inputs), want):
            np.testing.assert_allclose(got, np.asarray(expected), rtol=1e-5, atol=2e-5)


def test_a_compact_export_keeps_its_compact_shapes():
    config, params = compact_model()
    assert (config.heads(0), config.heads(2), config.ffn(0), config.ffn(2)) == (3, 4, 96, 56)
    proto = write.span_model_onnx(config, params)
    shapes = {tensor.name: tuple(tensor.dims) for tensor in proto.graph.initializer}
    for i in range(config.num_hidden_layers):
        assert shapes[f"layer_{i}/query/kernel"] == (64, config.heads(i) * config.head_dim)
        assert shapes[f"layer_{i}/intermediate/kernel"] == (64, config.ffn(i))


def test_layer_norm_softmax_and_gelu_are_written_as_their_onnx_ops():
    config = bert.SIZES["tiny"]
    params = jax.device_get(nn.meta.unbox(models.init_params(SpanModel(config), jax.random.key(1))))
    ops = collections.Counter(node.op_type for node in write.span_model_onnx(config, params).graph.node)
    layers = config.num_hidden_layers
    assert (ops["LayerNormalization"], ops["Softmax"], ops["Gelu"]) == (2 * layers + 1, layers, layers)
    assert ops["Erf"] == ops["Exp"] == ops["Sqrt"] == 0  # no step of them left behind


def test_layer_norms_take_their_scale_and_bias_and_biases_stay_vectors():
    # As ONNX Runtime's fusions want them: LayerNormalization holds the
    # model's own scale and bias (no product and sum after it), and a bias
    # added after a product is the (N,) vector (so MatMul, Add, Gelu fuse).
    config = bert.SIZES["tiny"]
    params = jax.device_get(nn.meta.unbox(models.init_params(SpanModel(config), jax.random.key(1))))
    graph = write.span_model_onnx(config, params).graph
    norms = [node.input for node in graph.node if node.op_type == "LayerNormalization"]
    assert ["embeddings/LayerNorm/scale", "embeddings/LayerNorm/bias"] == norms[0][1:]
    assert all(scale.endswith("/scale") and bias.endswith("/bias") for _, scale, bias in norms)
    made_by = {output: node for node in graph.node for output in node.output}
    gelu_input = made_by[next(node.input[0] for node in graph.node if node.op_type == "Gelu")]
    assert (gelu_input.op_type, gelu_input.input[1]) == ("Add", "layer_0/intermediate/bias")
    assert made_by[gelu_input.input[0]].op_type == "MatMul"


@pytest.fixture(scope="module")
def exports(teacher, tmp_path_factory):
    """The teacher exported in float32 and in int8."""
    out = tmp_path_factory.mktemp("exports")
    return {p: write.export(teacher, out / p, "onnx", p) for p in write.PRECISIONS}


def test_int8_stays_near_float32(teacher, exports, squad):
    # Dynamic int8 rounds each weight to 1/254 of its channel's largest and
    # each activation to 1/255 of its tensor's range; through two layers that
    # moves logits of this model (about +-0.5) by a few hundredths at most.
    assert_int8_near_float32(exports, jaxqa.load_pretrained(teacher).config.vocab_size)
    assert (exports["int8"] / write.MODEL_FILES["onnx"]).stat().st_size < 0.5 * (
        exports["fp32"] / write.MODEL_FILES["onnx"]
    ).stat().st_size


@pytest.mark.parametrize("name", FAMILY_MODELS)
def test_every_familys_int8_export_runs_near_float32(name, squad, tmp_path):
    config, params = family_model(name)
    assert_int8_runs_near_float32(name, config, params, squad, tmp_path, "onnx")


def test_the_pipeline_over_an_export_answers_as_jaxqa_does(teacher, exports, squad):
    assert_served_as_jaxqa(teacher, exports["fp32"], squad)


def test_a_damaged_export_is_refused_in_one_line(exports, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(exports["fp32"], broken)
    (broken / write.MODEL_FILES["onnx"]).write_bytes(b"not a model")
    with pytest.raises(jaxqa.Error, match=r"model.onnx: ONNX Runtime cannot load it \("):
        jaxqa.open_model(broken, "auto")
    (broken / write.RECORD_FILE).write_text("{")
    with pytest.raises(jaxqa.Error, match="export.json: not an export record jaxqa wrote"):
        jaxqa.open_model(broken, "auto")


def test_an_onnx_record_must_match_its_model_file(exports, tmp_path):
    tampered = tmp_path / "tampered"
    record = reversed_record_binds_by_name(exports["fp32"], tampered, {}, 24)
    cases = [
        ({"precision": "fp16"}, "'precision' is 'fp16', not one of fp32, int8"),
        ({"format": "tflite"}, "'format' is 'tflite', not one of onnx, litert"),
        (
            {"inputs": ["ids", "attention_mask", "token_type_ids"]},
            r"'inputs' is \['ids', 'attention_mask', 'token_type_ids'\], not the names jaxqa writes",
        ),
        ({"inputs": [*record["inputs"], "input_ids"]}, "'inputs' is .*, not the names jaxqa writes"),
        ({"outputs": ["start_logits"]}, r"'outputs' is \['start_logits'\], not the names jaxqa writes"),
        ({"outputs": "start_logits end_logits"}, "'outputs' is 'start_logits end_logits', not the names"),
    ]
    assert_records_refused(tampered, record, cases)


def test_an_export_is_served_in_its_own_precision_only(exports):
    with pytest.raises(jaxqa.Error, match="an ONNX export in int8, which runs in that precision only"):
        jaxqa.pipeline(exports["int8"], precision="fp32")
    with pytest.raises(jaxqa.Error, match="open it with jaxqa.open_model"):
        jaxqa.load_pretrained(exports["fp32"])


def test_predict_and_evaluate_serve_an_export(teacher, exports, squad, tmp_path, capsys):
    from jaxqa import evaluate, predict

    assert (
        predict.main(
            [
                "--checkpoint",
                str(exports["int8"]),
                "--question",
                "who?",
                "--context",
                "nobody knows",
                "--max-seq-len",
                "64",
            ]
        )
        == 0
    )
    assert "answer" in json.loads(capsys.readouterr().out.splitlines()[0])
    common = ["--data", str(squad), "--max-seq-length", "64", "--doc-stride", "32"]
    for name, model in (("jaxqa", teacher), ("onnx", exports["fp32"])):
        precision = ["--precision", "fp32"] if name == "jaxqa" else []
        assert evaluate.main(["--checkpoint", str(model), "--out-dir", str(tmp_path / name), *common, *precision]) == 0
    predictions = [json.loads((tmp_path / name / "predictions.json").read_text()) for name in ("jaxqa", "onnx")]
    assert predictions[0] == predictions[1] and len(predictions[0]) > 10
    argv = ["--checkpoint", str(exports["fp32"]), "--data", str(squad), "--out-dir", str(tmp_path)]
    assert evaluate.main([*argv, "--precision", "bf16"]) == 2
    assert "an ONNX export in fp32" in capsys.readouterr().err


def test_the_command_names_what_is_wrong_in_one_line(teacher, exports, tmp_path, capsys):
    encoder = tmp_path / "encoder"  # a Hugging Face BERT without a span head
    encoder.mkdir()
    shutil.copy2(teacher / "config.json", encoder / "config.json")
    model = jaxqa.load_pretrained(teacher)
    state = hf_names.params_to_hf("bert", model.config, model.params)
    save_file({k: v for k, v in state.items() if not k.startswith("qa_outputs")}, encoder / "model.safetensors")
    (tmp_path / "a-file").write_text("")
    cases = [
        ([str(tmp_path / "missing"), str(tmp_path / "out")], "missing"),
        ([str(teacher), str(exports["fp32"])], "already exists and is not empty (pass --overwrite"),
        ([str(teacher), str(tmp_path / "a-file")], "is a file, not a folder"),
        ([str(encoder), str(tmp_path / "out")], "no span head (qa_outputs)"),
    ]
    for argv, said in cases:
        assert write.main(argv) == 2
        err = capsys.readouterr().err
        assert said in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()
    assert write.main([str(teacher), str(tmp_path / "new"), "--precision", "int8"]) == 0
    assert json.loads((tmp_path / "new" / write.RECORD_FILE).read_text())["precision"] == "int8"


def test_a_tokenizer_past_the_vocabulary_is_refused_before_converting(squad, tmp_path, capsys):
    config = dataclasses.replace(bert.SIZES["tiny"], vocab_size=20)  # the fixture's tokenizer has more tokens
    params = nn.meta.unbox(models.init_params(SpanModel(config), jax.random.key(0)))
    folder = jaxqa.save_pretrained(tmp_path / "small", "bert", config, params, squad.parent)
    assert write.main([str(folder), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "tokens, more than the model's vocabulary of 20 (vocab_size)" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("fmt, missing", [("onnx", "onnxruntime.quantization"), ("litert", "ai_edge_quantizer")])
def test_a_missing_quantizer_is_named_before_converting(teacher, tmp_path, monkeypatch, capsys, fmt, missing):
    monkeypatch.setitem(sys.modules, missing, None)  # its import fails

    def converted(*args):
        raise AssertionError("converted before the quantizer was found")

    monkeypatch.setattr(write, "span_model_onnx", converted)
    monkeypatch.setattr(write, "_write_litert", converted)
    assert write.main([str(teacher), str(tmp_path / "out"), "--format", fmt, "--precision", "int8"]) == 2
    err = capsys.readouterr().err
    assert "quantizer" in err.lower() and 'pip install "jaxqa[' in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_symbolic_dimensions_compute_in_the_graphs_arithmetic():
    # The one private JAX method the ONNX writer calls (`graph._evaluated`): an
    # expression of the free dimensions, computed from values of one's own.
    batch, length = jax_export.symbolic_shape("batch, sequence")
    assert graph._evaluated(batch * length + 3, {"batch": 2, "sequence": 5}) == 13
    assert graph._evaluated(2 * length, {"batch": 7, "sequence": 11}) == 22
