"""LiteRT exports: the program jaxqa runs, through jax.export's StableHLO and
the LiteRT converter, gives jaxqa's logits under the LiteRT interpreter for
every family and compact models (at their compact shapes, layers of no heads
or no feed-forward units included); int8 stays close;
served back, an export answers as jaxqa does; the Task Library signature has
BertQuestionAnswerer's names, shapes and output order."""

import collections
import json
import shutil

import numpy as np
import pytest
from export_checks import (
    assert_int8_near_float32,
    assert_int8_runs_near_float32,
    assert_records_refused,
    assert_served_as_jaxqa,
    reversed_record_binds_by_name,
)
from random_models import FAMILY_MODELS, compact_model, family_model, windows

pytest.importorskip("litert_converter", reason="the LiteRT export is the optional extra jaxqa[litert]")
from ai_edge_litert.interpreter import Interpreter

import jaxqa
from jaxqa.export import litert, write
from jaxqa.export.runtime import LiteRTRuntime
from jaxqa.models.encoder import SpanModel

LENGTHS = (16, 24)  # two signatures


def interpreter(flatbuffer: bytes) -> Interpreter:
    return Interpreter(model_content=flatbuffer, num_threads=1)


# The inner loop converts BERT's layers, plain and compact (and the int8
# tests convert the compact model with empty layers); every family's program
# is traced in the inner loop too, by the ONNX export's tests.
@pytest.mark.parametrize(
    "name",
    [
        name if name in ("bert", "compact-bert") else pytest.param(name, marks=pytest.mark.slow)
        for name in FAMILY_MODELS
    ],
)
def test_a_litert_export_gives_jaxqas_logits(name, tmp_path):
    config, params = family_model(name)
    path = tmp_path / "model.tflite"
    path.write_bytes(litert.span_model_tflite(config, params, LENGTHS, write.INPUTS, write.OUTPUTS))
    record = {"inputs": list(write.INPUTS), "outputs": list(write.OUTPUTS), "lengths": list(LENGTHS)}
    forward = LiteRTRuntime(path, record)
    for batch, length in ((1, 24), (3, 20), (2, 9)):  # run in the shortest signature that holds them, padded
        inputs = windows(config.vocab_size, batch, length)
        want = SpanModel(config).apply({"params": params}, *inputs)
        for got, expected in zip(forward(*inputs), want):
            np.testing.assert_allclose(got, np.asarray(expected), rtol=1e-5, atol=2e-5)


def test_a_compact_litert_export_keeps_its_compact_shapes():
    config, params = compact_model()
    flatbuffer = litert.span_model_tflite(config, params, (24,), write.INPUTS, write.OUTPUTS)
    shapes = collections.Counter(tuple(t["shape"].tolist()) for t in interpreter(flatbuffer).get_tensor_details())
    # Fully connected weights are (out, in): per layer, query, key and value
    # (its heads x 16, 64) and their output (64, heads x 16), then its units in and out.
    expected: collections.Counter = collections.Counter()
    for i in range(config.num_hidden_layers):
        width, units = config.heads(i) * config.head_dim, config.ffn(i)
        expected.update([(width, 64)] * 3 + [(64, width), (units, 64), (64, units)])
    assert {shape: shapes[shape] for shape in expected} == expected
    assert (config.heads(0), config.ffn(2)) == (3, 56)


@pytest.fixture(scope="module")
def exports(teacher, tmp_path_factory):
    """The teacher exported to LiteRT in float32 and in int8, windows of 32 and 64 tokens."""
    out = tmp_path_factory.mktemp("litert")
    return {p: write.export(teacher, out / p, "litert", p, length=64, length_step=32) for p in write.PRECISIONS}


def test_litert_int8_stays_near_float32(exports):
    # As for ONNX's int8: weights to 1/254 of their channel's largest, activations
    # to 1/255 of their row's range; through two layers logits of about +-0.5 move
    # by a few hundredths at most.
    assert_int8_near_float32(exports, 1000)
    assert (exports["int8"] / "model.tflite").stat().st_size < 0.5 * (exports["fp32"] / "model.tflite").stat().st_size


@pytest.mark.parametrize("name", FAMILY_MODELS)
def test_every_familys_litert_int8_export_runs_near_float32(name, squad, tmp_path):
    config, params = family_model(name)
    assert_int8_runs_near_float32(name, config, params, squad, tmp_path, "litert", length=64)


def test_the_pipeline_over_a_litert_export_answers_as_jaxqa_does(teacher, exports, squad):
    assert_served_as_jaxqa(teacher, exports["fp32"], squad)


def test_the_task_library_signature(teacher, tmp_path):
    out = write.export(teacher, tmp_path / "task", "litert", task_library=True)
    model = interpreter((out / "model.tflite").read_bytes())
    runner = model.get_signature_runner()
    assert list(model.get_signature_list()) == ["length_384"]
    inputs = runner.get_input_details()
    assert [d["index"] for d in model.get_input_details()] == [
        inputs[n]["index"] for n in ("ids", "mask", "segment_ids")
    ]
    for details in inputs.values():
        assert list(details["shape"]) == [1, 384] and details["dtype"] == np.int32
    outputs = runner.get_output_details()
    assert [d["index"] for d in model.get_output_details()] == [
        outputs[n]["index"] for n in ("end_logits", "start_logits")
    ]
    ids, mask, types = windows(1000, 1, 384)
    got = runner(ids=ids, mask=mask, segment_ids=types)
    start, end = jaxqa.open_model(teacher, "fp32")(ids, mask, types)
    np.testing.assert_allclose(got["start_logits"], np.asarray(start), rtol=1e-5, atol=2e-5)
    np.testing.assert_allclose(got["end_logits"], np.asarray(end), rtol=1e-5, atol=2e-5)
    served = jaxqa.open_model(out, "auto")  # jaxqa serves it too, by the names in export.json
    np.testing.assert_allclose(served(ids, mask, types)[1], np.asarray(end), rtol=1e-5, atol=2e-5)


def test_litert_mistakes_are_named_in_one_line(teacher, exports, tmp_path, capsys):
    cases = [
        ([str(teacher), str(tmp_path / "a"), "--sequence", "64"], "--sequence applies to --format litert only"),
        ([str(teacher), str(tmp_path / "a"), "--task-library"], "--task-library applies to --format litert only"),
        ([str(teacher), str(tmp_path / "a"), "--format", "litert", "--sequence", "0"], "--sequence 0: the model has"),
        ([str(teacher), str(tmp_path / "a"), "--format", "litert", "--sequence", "4096"], "--sequence 4096"),
        ([str(teacher), str(tmp_path / "a"), "--length-step", "32"], "--length-step applies to --format litert only"),
        ([str(teacher), str(tmp_path / "a"), "--format", "litert", "--length-step", "0"], "--length-step 0: must be"),
        (
            [str(teacher), str(tmp_path / "a"), "--format", "litert", "--task-library", "--sequence", "128"],
            "--sequence: the Task Library's BertQuestionAnswerer takes one window, [1, 384]",
        ),
    ]
    for argv, said in cases:
        assert write.main(argv) == 2
        err = capsys.readouterr().err
        assert said in err and err.count("\n") == 1, err
    assert not (tmp_path / "a").exists()
    with pytest.raises(jaxqa.Error, match="windows of 80 tokens do not fit this LiteRT export's 64"):
        jaxqa.open_model(exports["fp32"], "auto")(*windows(1000, 1, 80))
    broken = tmp_path / "broken"
    shutil.copytree(exports["fp32"], broken)
    (broken / "model.tflite").write_bytes(b"not a model")
    with pytest.raises(jaxqa.Error, match=r"model.tflite: the LiteRT interpreter cannot load it \("):
        jaxqa.open_model(broken, "auto")
    with pytest.raises(jaxqa.Error, match="a LiteRT export in int8, which runs in that precision only"):
        jaxqa.pipeline(exports["int8"], precision="fp32")
    assert json.loads((exports["int8"] / write.RECORD_FILE).read_text())["lengths"] == [32, 64]


def test_a_litert_record_must_match_its_model_file(exports, tmp_path):
    tampered = tmp_path / "tampered"
    record = reversed_record_binds_by_name(exports["fp32"], tampered, {"lengths": [64, 32]}, 40)
    cases = [
        ({"lengths": []}, r"'lengths' is \[\], not window lengths of 1 to"),
        ({"lengths": [32]}, r"lengths \[32\] are not those of model.tflite's signatures"),
        ({"lengths": [32, 64, 64]}, r"lengths \[32, 64, 64\] are not"),
        ({"inputs": ["ids", "mask", "segment_ids"]}, r"inputs \['ids', 'mask', 'segment_ids'\] are not those of"),
        ({"precision": "fp16"}, "'precision' is 'fp16', not one of fp32, int8"),
    ]
    assert_records_refused(tampered, record, cases)


def test_the_pipeline_defaults_to_the_exports_longest_window(exports):
    # An export of windows up to 64 tokens: the pipeline's windows fit it, not Hugging Face's 384.
    qa = jaxqa.pipeline(exports["fp32"])
    assert (qa.settings.max_seq_length, qa.settings.doc_stride) == (64, 32)
    context = "The tower of gondor stands near ithil. " * 12  # several windows
    answer = qa(question="Where does the tower of gondor stand?", context=context)
    assert answer["answer"] == context[answer["start"] : answer["end"]]
    with pytest.raises(jaxqa.Error, match="^max_seq_len 80: .* takes windows of at most 64 tokens$"):
        jaxqa.pipeline(exports["fp32"], max_seq_len=80)


def test_the_converters_private_modules_hold_what_the_export_uses():
    # The LiteRT converter has no public API for StableHLO: `litert.converter_modules`
    # isolates the private modules it was checked against.
    stablehlo, ir, passmanager, converter_api = litert.converter_modules()
    assert callable(stablehlo.deserialize_portable_artifact)
    assert callable(ir.Context) and callable(ir.StringAttr.get) and callable(passmanager.PassManager)
    for name in (
        "prepare_mlir_context",
        "run_convert_to_tfl_passes",
        "ConvertToTFLConfig",
        "set_signature",
        "merge_modules",
        "export_flatbuffer_to_bytes",
    ):
        assert callable(getattr(converter_api, name)), name
