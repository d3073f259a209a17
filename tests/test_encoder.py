"""The encoder core: scanned layers equal unrolled ones, runs of like layers
stack exactly and reversibly to the files' one layer per name, fused attention
equals the reference, the paths that run without dropout take the fused call,
and the XLA runtime reads each layer's weights in place."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from random_models import FAMILY_MODELS, family_model

from jaxqa import models, precision, sharding
from jaxqa.engine import Compiled
from jaxqa.models import bert, layers
from jaxqa.models.compact import compact
from jaxqa.models.encoder import SpanModel, per_layer, stacked
from jaxqa.models.execution import REMAT, Execution
from jaxqa.training import optim
from jaxqa.training.state import TrainState
from jaxqa.training.step import Distillation, make_train_step


def padded_batch(vocab: int = 40, lengths=(16, 11, 0)):
    """(ids, mask, types), each (B, 16): row b has lengths[b] real tokens, then
    padding; a row of 0 is a batch filler of only padding."""
    rng = np.random.default_rng(0)
    mask = (np.arange(16)[None] < np.array(lengths)[:, None]).astype(np.int32)
    ids = np.where(mask, rng.integers(5, vocab, mask.shape), 0).astype(np.int32)
    types = (mask * (np.arange(16)[None] >= 6)).astype(np.int32)
    return jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(types)


def three_layers(model_type: str):
    """The family's tiny config, three layers deep (dropout as configured)."""
    config = models.family(model_type).sizes["tiny"]
    depth = "n_layers" if model_type == "distilbert" else "num_hidden_layers"
    return dataclasses.replace(config, **{depth: 3})


def logits_and_grads(models_, params, deterministic: bool) -> list:
    """(logits, gradients by name) of each model, all in one program (one compile)."""
    batch = padded_batch()

    def loss(model, params):
        start, end = model.apply(
            {"params": params}, *batch, deterministic=deterministic, rngs={"dropout": jax.random.key(3)}
        )
        real = batch[1] > 0
        return jnp.where(real, start * end, 0).sum(), (start, end)

    results = jax.jit(lambda p: [jax.value_and_grad(functools.partial(loss, m), has_aux=True)(p) for m in models_])(
        params
    )
    return [(np.stack(logits), traverse_util.flatten_dict(grads, sep="/")) for (_, logits), grads in results]


@pytest.mark.parametrize(
    "model_type", ["bert", *(pytest.param(m, marks=pytest.mark.slow) for m in models.MODEL_TYPES[1:])]
)
@pytest.mark.parametrize(
    "deterministic", [True, pytest.param(False, marks=pytest.mark.slow)], ids=["no-dropout", "dropout"]
)
def test_scanned_and_unrolled_layers_give_the_same_logits_and_gradients(model_type, deterministic):
    config = three_layers(model_type)
    params = nn.meta.unbox(models.init_params(SpanModel(config), jax.random.key(0)))
    variants = [SpanModel(config, execution=Execution(scan=False))]
    variants += [SpanModel(config, execution=Execution(remat=remat)) for remat in REMAT]
    unrolled, *scanned_by_remat = logits_and_grads(variants, params, deterministic)
    for remat, scanned in zip(REMAT, scanned_by_remat):
        np.testing.assert_allclose(scanned[0], unrolled[0], rtol=1e-5, atol=1e-6)
        assert scanned[1].keys() == unrolled[1].keys()
        for name, grad in unrolled[1].items():
            np.testing.assert_allclose(scanned[1][name], grad, rtol=1e-4, atol=1e-6, err_msg=f"{remat} {name}")


@pytest.mark.parametrize("model_type", models.MODEL_TYPES)
def test_runs_of_like_layers_stack_exactly_and_reversibly(model_type):
    config = three_layers(model_type)
    model = SpanModel(config)
    params = nn.meta.unbox(models.init_params(model, jax.random.key(0)))
    assert sorted(params["layers"]) == ["0_to_2"]
    if model_type == "mobilebert":  # its three stacked feed-forward networks but the last, stacked with the layers
        assert params["layers"]["0_to_2"]["ffn"]["0_to_2"]["intermediate"]["kernel"].shape == (3, 3, 32, 64)
    files = per_layer(config, params)  # one layer per name, as files hold them
    assert sorted(key for key in files if key.startswith("layer")) == ["layer_0", "layer_1", "layer_2"]
    back = stacked(config, files)
    assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(params)
    jax.tree_util.tree_map(np.testing.assert_array_equal, back, params)


@pytest.mark.parametrize("model_type", ["bert", "squeezebert", "mobilebert"])
def test_bfloat16_weights_stack_as_their_bits_and_compute_as_before(model_type):
    config = three_layers(model_type)
    fp32 = nn.meta.unbox(models.init_params(SpanModel(config), jax.random.key(0)))
    params = layers.bfloat16_bits(precision.prepare(fp32, "bf16"))
    model = SpanModel(config)
    assert params["layers"]["0_to_2"]["query"]["kernel"].dtype == jnp.uint16  # sliced without a float32 copy
    batch = padded_batch()
    unrolled = np.stack(SpanModel(config, execution=Execution(scan=False)).apply({"params": params}, *batch))
    np.testing.assert_allclose(np.stack(model.apply({"params": params}, *batch)), unrolled, rtol=1e-5, atol=1e-5)
    bits = per_layer(config, params)["layer_1"]["query"]["kernel"]
    np.testing.assert_array_equal(
        jax.lax.bitcast_convert_type(bits, jnp.bfloat16),
        jnp.asarray(fp32["layers"]["0_to_2"]["query"]["kernel"][1], jnp.bfloat16),
    )


def test_a_compact_bert_stacks_only_its_layers_of_equal_shapes_and_stays_exact():
    config = dataclasses.replace(bert.SIZES["tiny"], num_hidden_layers=4, hidden_dropout_prob=0.0)
    params = jax.tree_util.tree_map(np.array, nn.meta.unbox(models.init_params(SpanModel(config), jax.random.key(0))))
    # Layer 1 loses two heads and layer 3 half its units; layers 0 and 2 keep their shapes.
    params["layers"]["0_to_3"]["attention_output"]["kernel"][1, 16:48] = 0
    params["layers"]["0_to_3"]["output"]["kernel"][3, 64:] = 0
    small_config, small = compact(config, params)
    assert [small_config.heads(i) for i in range(4)] == [4, 2, 4, 4]
    assert [small_config.ffn(i) for i in range(4)] == [128, 128, 128, 64]
    assert sorted(small["layers"]) == ["0_to_0", "1_to_1", "2_to_2", "3_to_3"]
    batch = padded_batch()
    dense = np.stack(SpanModel(config).apply({"params": params}, *batch))
    real = np.broadcast_to(np.asarray(batch[1]) > 0, dense.shape)
    for ex in (Execution(), Execution(scan=False)):
        got = np.stack(SpanModel(small_config, execution=ex).apply({"params": small}, *batch))
        np.testing.assert_allclose(got[real], dense[real], rtol=1e-5, atol=1e-5)
    # Two layers of equal shapes next to each other are one scanned run.
    twin = dataclasses.replace(small_config, pruned_heads=(), intermediate_sizes=(128, 128, 64, 64))
    assert "2_to_3" in nn.meta.unbox(models.init_params(SpanModel(twin), jax.random.key(1)))["layers"]


@pytest.mark.parametrize(
    ("name", "mode"),
    [(name, "fp32") for name in FAMILY_MODELS]
    + [("bert", "bf16"), ("bert", "int8"), ("squeezebert", "bf16")]
    + [
        pytest.param(name, mode, marks=pytest.mark.slow)
        for name in FAMILY_MODELS[1:]
        for mode in ("bf16", "int8")
        if (name, mode) != ("squeezebert", "bf16")
    ],
)
def test_the_xla_runtime_reads_every_layers_weights_in_place_and_gives_the_scanned_logits(name, mode):
    config, fp32 = family_model(name)
    params = precision.prepare(fp32, mode)
    runtime = Compiled(SpanModel(config), params)
    batch = padded_batch(config.vocab_size)
    scanned = jax.jit(lambda p, *b: SpanModel(config).apply({"params": p}, *b))(params, *batch)
    # bfloat16 products may sum in another order once unrolled (SqueezeBERT's grouped ones do).
    np.testing.assert_allclose(
        np.stack(runtime(*batch)), np.stack(scanned), rtol=0, atol=1e-4 if mode == "bf16" else 1e-6
    )
    jax.tree_util.tree_map(np.testing.assert_array_equal, runtime.model_params, params)
    # The embeddings, a program per run of like layers, the span head: none loops over
    # layers, and a layer's takes that layer's own weights, which it reads where they are.
    embeddings, *per_run, head = runtime.forward.lowered(runtime.params, *batch)
    assert len(per_run) == len(runtime.forward.module.layer_runs(params))
    for program in (embeddings, *per_run, head):
        assert " while(" not in program.compile().as_text()
    hidden = batch[0].size * config.hidden_size * 4  # (B, T, D) float32
    for first, layer in zip(runtime.forward.module.layer_runs(params), per_run):
        leaves = jax.tree_util.tree_leaves(runtime.params[f"layer_{first[0]}"])
        weights = sum(leaf.nbytes for leaf in leaves)
        taken = layer.compile().memory_analysis().argument_size_in_bytes
        if any(leaf.size == 0 for leaf in leaves):  # a layer of no heads reads no mask, and jax drops it
            assert taken in (weights + hidden + batch[1].nbytes, weights + hidden)
        else:
            assert taken == weights + hidden + batch[1].nbytes


def reference_attention(q, k, v, mask):
    """Softmax attention over the keys the mask keeps, in float64 NumPy; a row
    with no key kept attends to all of them alike."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    scores = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(q.shape[-1])
    scores = np.where(np.asarray(mask)[:, None, None, :] > 0, scores, -1e30)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return np.einsum("bnts,bsnh->btnh", probs, v)


def test_fused_attention_equals_the_reference_on_padded_batches():
    _, mask, _ = padded_batch()
    rng = np.random.default_rng(1)
    q, k, v = (jnp.asarray(rng.standard_normal((3, 16, 4, 8)), jnp.float32) for _ in range(3))
    expected = reference_attention(q, k, v, mask)
    fused = np.asarray(layers.fused_attention(q, k, v, mask))
    dropped = np.asarray(layers.dropped_out_attention(q, k, v, mask, 0.0, jax.random.key(0)))
    assert np.isfinite(fused).all()  # the filler row of only padding too
    np.testing.assert_allclose(fused, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dropped, expected, rtol=1e-5, atol=1e-6)


@pytest.fixture
def attention_calls(monkeypatch):
    """Counts the calls of each attention path while programs are traced."""
    calls = {"fused": 0, "dropped_out": 0}
    fused, dropped = layers.fused_attention, layers.dropped_out_attention

    def count(name, function):
        def counted(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)

        return counted

    monkeypatch.setattr(layers, "fused_attention", count("fused", fused))
    monkeypatch.setattr(layers, "dropped_out_attention", count("dropped_out", dropped))
    return calls


def test_paths_without_dropout_take_the_fused_attention(attention_calls):
    config = bert.SIZES["tiny"]  # attention dropout 0.1
    model = SpanModel(config)
    params = nn.meta.unbox(models.init_params(model, jax.random.key(0)))
    batch = padded_batch()

    def traced(function, *args) -> dict[str, int]:
        """How often each attention path is traced into the program of function(*args)."""
        before = dict(attention_calls)
        jax.make_jaxpr(function)(*args)
        return {name: attention_calls[name] - before[name] for name in attention_calls}

    # A loaded model and the pipeline; evaluation, during training too, with its shared forward.
    loaded = traced(lambda p: model.apply({"params": p}, *batch), params)
    assert loaded["fused"] > 0 and loaded["dropped_out"] == 0
    mesh = sharding.make_mesh(sharding.parse_mesh(None, 1))
    forward = models.forward(model, sharding.replicated(mesh))
    evaluation = traced(forward, forward.held(params), *batch)
    assert evaluation["fused"] > 0 and evaluation["dropped_out"] == 0

    # Training with a teacher: the student drops attention out, the teacher does not.
    tx = optim.build("adamw", optim.schedule(1e-3, 1, 10), 0.01)
    state = TrainState.create(params, tx)
    train = {
        "input_ids": batch[0][None],
        "attention_mask": batch[1][None],
        "token_type_ids": batch[2][None],
        "start_positions": jnp.zeros((1, 3), jnp.int32),
        "end_positions": jnp.zeros((1, 3), jnp.int32),
    }
    student = traced(make_train_step(model, tx, 0), state, train, {})
    assert student["fused"] == 0 and student["dropped_out"] > 0
    taught = traced(make_train_step(model, tx, 0, Distillation(model, 0.5, 2.0)), state, train, params)
    assert taught["fused"] > 0 and taught["dropped_out"] == student["dropped_out"]

    # With attention dropout 0, training takes the fused call too.
    quiet = SpanModel(dataclasses.replace(config, attention_probs_dropout_prob=0.0))
    quiet_step = traced(make_train_step(quiet, tx, 0), state, train, {})
    assert quiet_step["fused"] > 0 and quiet_step["dropped_out"] == 0
