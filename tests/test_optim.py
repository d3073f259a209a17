"""LAMB and AdamW against a NumPy transcription of the published algorithms."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxqa import models
from jaxqa.models import stacking
from jaxqa.models.encoder import SpanModel, per_layer
from jaxqa.training import optim

B1, B2, EPS, CLIP = 0.9, 0.999, 1e-6, 1.0


def _params(seed=0):
    """One parameter of every kind the encoders have, biases non-zero so a trust ratio would show."""
    rng = np.random.default_rng(seed)

    def f(*shape, scale=0.5):
        return jnp.asarray(rng.normal(0.0, scale, shape), jnp.float32)

    return {
        "embeddings": {
            "word_embeddings": {"embedding": f(12, 8)},
            "LayerNorm": {"scale": 1.0 + f(8, scale=0.1), "bias": f(8, scale=0.1)},
        },
        "layer_0": {
            "query": {"kernel": f(8, 8), "bias": f(8, scale=0.1)},
            "attention_output": {"kernel": f(2, 4, 8), "bias": f(8, scale=0.1)},  # grouped (G, in/G, out)
            "NoNorm": {"weight": 1.0 + f(8, scale=0.1), "bias": f(8, scale=0.1)},
        },
        "qa_outputs": {"kernel": f(8, 2), "bias": f(2, scale=0.1)},
    }


def _grads(params, seed, scale):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda p: jnp.asarray(rng.normal(0.0, scale, p.shape), jnp.float32), params)


def _at(tree, keys):
    for key in keys:
        tree = tree[key]
    return tree


def _is_decayed(path):
    return path[-1].key in ("kernel", "embedding")


def _numpy_lamb(params, grads_per_step, lrs, weight_decay, trust_ratio=True):
    """The reference: LAMB (You et al. 2019, Algorithm 2) after global-norm clipping,
    in float64, with decay and trust ratio only on kernels and embeddings;
    without the trust ratio it is AdamW. Returns the updates of each step."""
    paths, leaves = zip(*jax.tree_util.tree_leaves_with_path(params))
    w = [np.asarray(x, np.float64) for x in leaves]
    m = [np.zeros_like(x) for x in w]
    v = [np.zeros_like(x) for x in w]
    all_updates = []
    for t, (grads, lr) in enumerate(zip(grads_per_step, lrs), start=1):
        g = [np.asarray(x, np.float64) for x in jax.tree.leaves(grads)]
        norm = np.sqrt(sum(np.sum(x**2) for x in g))
        g = [x * min(1.0, CLIP / norm) for x in g]
        updates = []
        for i, path in enumerate(paths):
            m[i] = B1 * m[i] + (1 - B1) * g[i]
            v[i] = B2 * v[i] + (1 - B2) * g[i] ** 2
            m_hat = m[i] / (1 - B1**t)
            v_hat = v[i] / (1 - B2**t)
            r = m_hat / (np.sqrt(v_hat) + EPS)
            ratio = 1.0
            if _is_decayed(path):
                r = r + weight_decay * w[i]
                w_norm, r_norm = np.linalg.norm(w[i]), np.linalg.norm(r)
                if trust_ratio and w_norm > 0 and r_norm > 0:
                    ratio = w_norm / r_norm
            updates.append(-lr * ratio * r)
            w[i] = w[i] + updates[-1]
        all_updates.append(updates)
    return all_updates


def _first_update(tx, params, grads):
    """(updates, state) after one step, jitted: one compile is cheaper than running each small op eagerly."""
    return jax.jit(lambda: tx.update(grads, tx.init(params), params))()


def _run(tx, params, grads_per_step):
    @jax.jit
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state, updates

    state = jax.jit(tx.init)(params)
    all_updates = []
    for grads in grads_per_step:
        params, state, updates = step(params, state, grads)
        all_updates.append(jax.tree.leaves(updates))
    return all_updates


def _assert_updates_close(actual, expected):
    for step, (a, e) in enumerate(zip(actual, expected)):
        for i, (x, y) in enumerate(zip(a, e)):
            np.testing.assert_allclose(np.asarray(x), y, rtol=2e-5, atol=1e-8, err_msg=f"step {step}, leaf {i}")


def test_decay_mask_by_leaf_name():
    mask = optim.decay_mask(_params())
    assert mask["embeddings"]["word_embeddings"]["embedding"]
    assert mask["layer_0"]["query"]["kernel"] and mask["layer_0"]["attention_output"]["kernel"]
    assert not mask["embeddings"]["LayerNorm"]["scale"] and not mask["embeddings"]["LayerNorm"]["bias"]
    assert not mask["layer_0"]["NoNorm"]["weight"] and not mask["layer_0"]["query"]["bias"]
    with pytest.raises(ValueError, match="gamma"):
        optim.decay_mask({"LayerNorm": {"gamma": jnp.ones(3)}})


@pytest.mark.parametrize("model_type", models.MODEL_TYPES)
def test_decay_mask_covers_every_encoder(model_type):
    family = models.family(model_type)
    params = nn.meta.unbox(models.abstract_params(SpanModel(family.sizes["tiny"])))
    mask = optim.decay_mask(params)
    for path, decayed in jax.tree_util.tree_leaves_with_path(mask):
        assert decayed == _is_decayed(path), jax.tree_util.keystr(path)
    jax.eval_shape(optim.build("lamb", optim.schedule(1e-3, 1, 10), 0.01).init, params)


def test_lamb_one_step_matches_reference():
    params = _params()
    grads = [_grads(params, seed=1, scale=0.3)]  # global norm about 5: clipping is active
    tx = optim.lamb(optax.constant_schedule(1e-2), weight_decay=0.01)
    _assert_updates_close(_run(tx, params, grads), _numpy_lamb(params, grads, [1e-2], 0.01))


def test_lamb_several_steps_with_schedule_match_reference():
    params = _params()
    grads = [_grads(params, seed=s, scale=0.3) for s in range(6)]
    peak, warmup, total = 1e-2, 2, 8
    lrs = [peak * min(s / warmup, (total - s) / (total - warmup)) for s in range(6)]
    tx = optim.lamb(optim.schedule(peak, warmup, total), weight_decay=0.01)
    _assert_updates_close(_run(tx, params, grads), _numpy_lamb(params, grads, lrs, 0.01))


def test_lamb_exempts_biases_and_gains_from_decay_and_trust_ratio():
    params = _params()
    grads = _grads(params, seed=1, scale=0.01)
    assert optax.tree.norm(grads) < CLIP  # no clipping, so optax.lamb is comparable
    lr, wd = 1e-2, 0.1
    ours, _ = _first_update(optim.lamb(optax.constant_schedule(lr), wd), params, grads)
    plain, _ = _first_update(optax.lamb(lr, B1, B2, EPS, weight_decay=wd, mask=optim.decay_mask), params, grads)
    # From zero moments, the first bias-corrected Adam direction is g / (|g| + eps).
    adam = jax.tree.map(lambda g: np.asarray(g, np.float64) / (np.abs(g) + EPS), grads)

    # Biases and gains: exactly the Adam step times the learning rate.
    for keys in (("embeddings", "LayerNorm", "scale"), ("layer_0", "NoNorm", "weight"), ("layer_0", "query", "bias")):
        w, a = _at(params, keys), _at(adam, keys)
        np.testing.assert_allclose(_at(ours, keys), -lr * a, rtol=2e-5)
        # optax.lamb rescales them by ||w|| / ||adam||, which the check above would catch.
        np.testing.assert_allclose(_at(plain, keys), -lr * np.linalg.norm(w) / np.linalg.norm(a) * a, rtol=1e-5)
        assert not np.allclose(_at(plain, keys), _at(ours, keys), rtol=1e-2)

    # Kernels and embeddings: decay and trust ratio, the same as optax.lamb.
    for keys in (
        ("layer_0", "query", "kernel"),
        ("layer_0", "attention_output", "kernel"),
        ("embeddings", "word_embeddings", "embedding"),
    ):
        w = _at(params, keys)
        r = _at(adam, keys) + wd * w
        np.testing.assert_allclose(_at(ours, keys), -lr * np.linalg.norm(w) / np.linalg.norm(r) * r, rtol=1e-5)
        np.testing.assert_allclose(_at(ours, keys), _at(plain, keys), rtol=1e-5)


def test_schedule_warmup_then_linear_decay():
    lr = optim.schedule(3e-5, warmup_steps=10, total_steps=110)
    for step, expected in [(0, 0.0), (5, 1.5e-5), (10, 3e-5), (60, 1.5e-5), (110, 0.0), (200, 0.0)]:
        np.testing.assert_allclose(float(lr(step)), expected, atol=1e-12, err_msg=f"step {step}")
    with pytest.raises(ValueError):
        optim.schedule(3e-5, warmup_steps=10, total_steps=10)


@pytest.mark.parametrize("name", ["lamb", "adamw"])
def test_huge_gradient_is_clipped_to_global_norm(name):
    params = _params()
    grads = _grads(params, seed=1, scale=1e6)
    tx = optim.build(name, optax.constant_schedule(1e-3), weight_decay=0.01)
    _, state = _first_update(tx, params, grads)
    # After one step the first moment is (1 - b1) times the clipped gradient.
    clipped = [np.asarray(m, np.float64) / (1 - B1) for m in jax.tree.leaves(optax.tree_utils.tree_get(state, "mu"))]
    np.testing.assert_allclose(np.sqrt(sum(np.sum(c**2) for c in clipped)), CLIP, rtol=1e-5)
    g = [np.asarray(x, np.float64) for x in jax.tree.leaves(grads)]
    norm = np.sqrt(sum(np.sum(x**2) for x in g))
    for c, x in zip(clipped, g):
        np.testing.assert_allclose(c, x * CLIP / norm, rtol=1e-5, atol=1e-10)


def test_adamw_matches_reference_without_trust_ratio():
    params = _params()
    grads = [_grads(params, seed=s, scale=0.3) for s in range(3)]
    tx = optim.adamw(optax.constant_schedule(1e-2), weight_decay=0.01)
    expected = _numpy_lamb(params, grads, [1e-2] * 3, 0.01, trust_ratio=False)
    _assert_updates_close(_run(tx, params, grads), expected)


def test_adamw_decay_is_decoupled_and_masked():
    params = _params()
    zeros = jax.tree.map(jnp.zeros_like, params)
    lr, wd = 1e-2, 0.1
    tx = optim.adamw(optax.constant_schedule(lr), wd)
    updates, state = _first_update(tx, params, zeros)
    # A zero gradient leaves the moments at zero (the decay never enters them)
    # and the update is the decay alone, only on kernels and embeddings.
    for moment in ("mu", "nu"):
        ((_, tree),) = optax.tree_utils.tree_get_all_with_path(state, moment)
        assert all(not np.any(x) for x in jax.tree.leaves(tree))
    for path, u in jax.tree_util.tree_leaves_with_path(updates):
        w = _at(params, [key.key for key in path])
        np.testing.assert_allclose(u, -lr * wd * w if _is_decayed(path) else np.zeros_like(w), rtol=1e-6)


@pytest.mark.parametrize("name", ["lamb", "adamw"])
def test_state_is_float32_for_float32_params(name):
    tx = optim.build(name, optim.schedule(1e-3, 1, 10), weight_decay=0.01)
    state = jax.eval_shape(tx.init, _params())
    floats = [x.dtype for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)]
    assert floats and all(d == jnp.float32 for d in floats)


def test_build_rejects_unknown_name():
    with pytest.raises(ValueError, match="'sgd'"):
        optim.build("sgd", optax.constant_schedule(1e-3), weight_decay=0.01)


@pytest.mark.parametrize("name", ["lamb", pytest.param("adamw", marks=pytest.mark.slow)])
@pytest.mark.parametrize("model_type", ["bert", pytest.param("mobilebert", marks=pytest.mark.slow)])
def test_stacked_layers_take_the_updates_they_take_one_by_one(name, model_type):
    """The model holds runs of like layers stacked: each layer's trust ratio, decay
    and moments are what it would have on its own, in the tree of one layer per
    name (MobileBERT's stacked feed-forward networks are stacked twice)."""
    config = models.family(model_type).sizes["tiny"]
    model = SpanModel(config)
    stacked = nn.meta.unbox(models.init_params(model, jax.random.key(0)))
    params = per_layer(config, stacked)
    layer_axes = stacking.layer_axes(models.abstract_params(model))
    tx = optim.build(name, optim.schedule(1e-2, 1, 10), 0.01)
    stacked_tx = optim.build(name, optim.schedule(1e-2, 1, 10), 0.01, layer_axes=layer_axes)
    state, stacked_state = tx.init(params), stacked_tx.init(stacked)
    for seed in range(3):
        stacked_grads = _grads(stacked, seed, scale=0.3)
        updates, state = tx.update(per_layer(config, stacked_grads), state, params)
        stacked_updates, stacked_state = stacked_tx.update(stacked_grads, stacked_state, stacked)
        params, stacked = optax.apply_updates(params, updates), optax.apply_updates(stacked, stacked_updates)
    for path, value in jax.tree_util.tree_leaves_with_path(per_layer(config, stacked)):
        expected = params
        for key in path:
            expected = expected[key.key]
        np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-7, err_msg=jax.tree_util.keystr(path))
