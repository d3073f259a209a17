"""Inference precisions (`jaxqa.precision`): the int8 product against NumPy,
each mode's logits against float32 for every family, `auto` by CPU features,
int8 checkpoints, no compiling after warm-up in any mode, and the persistent
compilation cache holding every mode."""

import logging
import os
import shutil
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest
import safetensors.numpy
from flax import traverse_util
from safetensors import safe_open

import jaxqa
from jaxqa import models, precision
from jaxqa.checkpoint import PARAMS_FILE
from jaxqa.models.convert import ConversionError
from jaxqa.models.encoder import SpanModel
from jaxqa.models.layers import matmul

# Relative L2 error of the logits against float32 over the real tokens of a
# random batch, for the tiny random models. Rounding a product's operands to
# bfloat16 (8 significant bits) errs by about 2^-9 of each; int8 rounds each
# activation to a step of 1/127 of its token's largest, several times coarser.
# The residual stream carries each layer's input past its products, so the
# logits err by less: at most 4e-4 (bf16) and 1.3e-3 (int8), both MobileBERT's,
# whose bottlenecks put the most products in series. The bounds are 2.5 times those.
BOUNDS = {"bf16": 1e-3, "int8": 3.2e-3}


def test_int8_product_against_numpy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 16)).astype(np.float32) * np.array([0.1, 1, 10, 0.5, 3])[None, :, None]
    x[1, 2] = 0  # a token of zeros: scale 0, no division by it
    w = rng.standard_normal((16, 8)).astype(np.float32)
    w[:, 3] = 0
    kernel, scale = precision.quantize(w)
    assert kernel.dtype == np.int8 and scale.shape == (8,) and np.abs(kernel).max() == 127
    assert np.all(kernel[:, 3] == 0) and scale[3] == 0

    x_scale = np.abs(x).max(axis=-1, keepdims=True) / 127
    x_int8 = np.round(x / np.where(x_scale > 0, x_scale, 1)).astype(np.int32)
    expected = (x_int8 @ kernel.astype(np.int32)).astype(np.float32) * x_scale * scale
    got = np.asarray(matmul(x, kernel, scale, np.float32))
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    assert not np.any(np.isnan(got))
    np.testing.assert_allclose(got, x @ w, atol=0.05 * np.abs(x @ w).max())


def test_quantize_and_dequantize_grouped_kernels():
    w = np.random.default_rng(1).standard_normal((4, 16, 8)).astype(np.float32)  # (G, I, O)
    kernel, scale = precision.quantize(w)
    assert kernel.shape == w.shape and scale.shape == (4, 8)
    # Each weight is within half a step of its channel's grid.
    assert np.all(np.abs(precision.dequantize(kernel, scale) - w) <= scale[:, None, :] / 2 + 1e-7)


def random_model(model_type: str):
    fam = models.family(model_type)
    config = fam.sizes["tiny"]
    module = SpanModel(config)
    params = jax.device_get(nn.meta.unbox(models.init_params(module, jax.random.key(0))))
    return module, params


def random_batch(vocab: int = 100, batch: int = 3, length: int = 24):
    rng = np.random.default_rng(0)
    ids = rng.integers(5, vocab, (batch, length)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 17:] = 0
    mask[2, 9:] = 0
    types = (np.arange(length)[None] > 8).astype(np.int32).repeat(batch, 0)
    return ids, mask, types


@pytest.mark.parametrize("mode", ["bf16", "int8"])
@pytest.mark.parametrize("model_type", models.MODEL_TYPES)
def test_each_mode_stays_close_to_float32(model_type, mode):
    module, params = random_model(model_type)
    batch = random_batch()
    forward = jax.jit(lambda p: module.apply({"params": p}, *batch))
    f32 = np.stack(forward(precision.prepare(params, "fp32")))
    prepared = precision.prepare(params, mode)
    flat = traverse_util.flatten_dict(prepared, sep="/")
    kernels = [key for key in flat if precision.is_quantized(key)]
    assert kernels and all(flat[key].dtype == {"bf16": jax.numpy.bfloat16, "int8": np.int8}[mode] for key in kernels)
    assert flat["qa_outputs/kernel"].dtype == np.float32  # the span head stays float32
    low = np.stack(forward(prepared))
    assert low.dtype == np.float32
    real = np.broadcast_to(batch[1] == 1, f32.shape)
    relative = np.linalg.norm((low - f32)[real]) / np.linalg.norm(f32[real])
    assert 0 < relative < BOUNDS[mode], relative


def test_auto_chooses_by_cpu_features(monkeypatch, caplog):
    assert precision.choose("cpu", frozenset({"avx2", "fma"})) == ("fp32", precision.choose("cpu", frozenset())[1])
    assert (
        precision.choose("cpu", frozenset({"avx2", "avx512f", "avx512_vnni"}))[0] == "fp32"
    )  # VNNI speeds up int8 only
    assert precision.choose("cpu", frozenset({"avx512f", "avx512_vnni", "avx512_bf16"}))[0] == "bf16"  # Zen 4
    # AMX: int8 is faster still, but keeps too few of float32's answers.
    assert (
        precision.choose("cpu", frozenset({"avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile"}))[0]
        == "bf16"
    )
    assert precision.choose("cpu", frozenset({"amx_bf16"}))[0] == "bf16"
    assert precision.choose("gpu", frozenset())[0] == "bf16"
    assert precision.training_bf16("cpu", frozenset({"amx_bf16"})) and precision.training_bf16("tpu", frozenset())
    assert not precision.training_bf16("cpu", frozenset({"avx512_bf16"}))

    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"amx_int8", "amx_bf16"}))
    with caplog.at_level(logging.INFO, logger="jaxqa"):
        assert precision.pick("auto") == "bf16"
    assert "precision auto: bf16 (CPU with bfloat16 units (amx_bf16))" in caplog.text
    assert precision.pick("bf16") == "bf16"
    with pytest.raises(jaxqa.Error, match="^--precision 'fp16': choose one of auto, fp32, bf16, int8$"):
        precision.pick("fp16", "--precision")


@pytest.fixture(scope="module")
def tiny_checkpoint(squad, tmp_path_factory):
    config = models.family("bert").sizes["tiny"]
    params = nn.unbox(models.init_params(SpanModel(config), jax.random.key(0)))
    folder = tmp_path_factory.mktemp("tiny") / "model"
    return jaxqa.save_pretrained(folder, "bert", config, params, squad.parent)


def test_int8_checkpoints_load_without_quantizing_again(tiny_checkpoint, tmp_path, monkeypatch):
    model = jaxqa.load_pretrained(tiny_checkpoint, "int8")
    saved = model.save(tmp_path / "int8")
    with safe_open(str(saved / PARAMS_FILE), framework="numpy") as f:
        assert f.metadata()["precision"] == "int8"
        assert f.get_tensor("layer_0/query/kernel").dtype == np.int8
        assert f.get_tensor("layer_0/query/kernel_scale").shape == (64,)
        assert f.get_tensor("qa_outputs/kernel").dtype == np.float32
    kernel_bytes = sum(
        value.size * 4
        for key, value in traverse_util.flatten_dict(model.params, sep="/").items()
        if precision.is_quantized(key)
    )
    shrunk = (tiny_checkpoint / PARAMS_FILE).stat().st_size - (saved / PARAMS_FILE).stat().st_size
    assert shrunk > 0.7 * kernel_bytes  # a byte per weight, not four

    def no_quantizing(kernel):
        raise AssertionError("quantized again")

    monkeypatch.setattr(precision, "quantize", no_quantizing)
    again = jaxqa.load_pretrained(saved, "int8")
    batch = random_batch(vocab=40)
    np.testing.assert_array_equal(np.stack(again(*batch)), np.stack(model(*batch)))
    # Asked in float32, an int8 checkpoint runs its dequantized weights.
    dequantized = jaxqa.load_pretrained(saved)
    assert dequantized.precision == "fp32"
    query = lambda params: params["layers"]["0_to_1"]["query"]  # both layers' query, stacked
    kernel = query(dequantized.params)["kernel"]
    assert kernel.dtype == np.float32 and "kernel_scale" not in query(dequantized.params)
    # Training, students and conversion read it so too.
    read = jaxqa.checkpoint.open_checkpoint(saved).read_params()
    np.testing.assert_array_equal(query(read)["kernel"], kernel)
    np.testing.assert_array_equal(
        kernel, precision.dequantize(*[query(model.params)[key] for key in ("kernel", "kernel_scale")])
    )


def test_an_int8_tensor_without_its_scale_is_refused(tiny_checkpoint, tmp_path):
    model = jaxqa.load_pretrained(tiny_checkpoint, "int8")
    saved = model.save(tmp_path / "int8")
    tensors = safetensors.numpy.load_file(saved / PARAMS_FILE)
    tensors.pop("layer_1/output/kernel_scale")
    broken = tmp_path / "broken"
    shutil.copytree(saved, broken)
    (broken / PARAMS_FILE).write_bytes(safetensors.numpy.save(tensors, {"format": "jaxqa", "precision": "int8"}))
    with pytest.raises(ConversionError, match=f"^{broken / PARAMS_FILE}: layer_1/output/kernel is int8, but only"):
        jaxqa.load_pretrained(broken, "int8")


def test_an_int8_checkpoint_runs_in_int8_under_auto(tiny_checkpoint, tmp_path, caplog):
    saved = jaxqa.load_pretrained(tiny_checkpoint, "int8").save(tmp_path / "int8")
    with caplog.at_level(logging.INFO, logger="jaxqa.precision"):
        qa = jaxqa.pipeline(saved, max_seq_len=64)
    assert qa.precision == "int8" and "precision auto: int8 (the weights are int8)" in caplog.text
    loaded = jaxqa.load_pretrained(saved, "int8")
    assert loaded.with_precision("auto") is loaded
    assert jaxqa.pipeline(saved, max_seq_len=64, precision="fp32").precision == "fp32"  # asked by name: dequantized


@pytest.mark.parametrize("mode", ["fp32", "bf16", "int8"])
def test_no_compiling_after_warm_up(tiny_checkpoint, mode):
    qa = jaxqa.pipeline(tiny_checkpoint, max_seq_len=64, batch_size=2, precision=mode)
    assert qa.precision == mode
    qa.warm_up()
    compiled = qa.traces
    context = "The tower of gondor stands near ithil. The river of arda stands near harad."
    for question in ("Where does the tower of gondor stand?", "Where?", "Where does the river of arda stand?" * 3):
        answer = qa(question=question, context=context * 2)
        assert answer["answer"] == (context * 2)[answer["start"] : answer["end"]]
    qa([{"question": "Where?", "context": context * 6}] * 3)
    assert qa.traces == compiled


# What JAX logs of each program: not in the persistent cache (with
# jax_explain_cache_misses), read from it (with jax_log_compiles).
MISS, HIT = "PERSISTENT COMPILATION CACHE MISS", "Persistent compilation cache hit"


@pytest.mark.slow
def test_the_compilation_cache_holds_every_mode(tiny_checkpoint, tmp_path):
    """A second `jaxqa.predict` in each mode answers the same and compiles
    nothing: every program comes from the cache the first one wrote, as JAX
    logs on stderr."""
    cache = tmp_path / "cache"
    asked = [
        sys.executable,
        "-m",
        "jaxqa.predict",
        "--checkpoint",
        str(tiny_checkpoint),
        "--question",
        "Where?",
        "--context",
        "The tower of gondor stands near ithil.",
        "--compilation-cache",
        str(cache),
    ]
    env = {**os.environ, "JAX_EXPLAIN_CACHE_MISSES": "1", "JAX_LOG_COMPILES": "1"}
    entries = lambda: set(cache.iterdir()) if cache.exists() else set()
    for mode in ("int8", "bf16"):
        before = entries()
        first = subprocess.run([*asked, "--precision", mode], capture_output=True, text=True, timeout=300, env=env)
        assert first.returncode == 0, first.stderr
        compiled, written = first.stderr.count(MISS), len(entries() - before)
        assert compiled and written >= compiled, f"{mode}: {compiled} programs compiled, {written} cached"
        again = subprocess.run([*asked, "--precision", mode], capture_output=True, text=True, timeout=300, env=env)
        assert again.returncode == 0 and again.stdout == first.stdout
        # Every program of the first run, compiled or read then, is read now.
        assert (again.stderr.count(MISS), again.stderr.count(HIT)) == (0, compiled + first.stderr.count(HIT)), mode
