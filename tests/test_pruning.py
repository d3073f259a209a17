"""Pruning while fine-tuning: each method's masks and the schedule against small
NumPy references, the straight-through gradients, the penalty, and
`jaxqa.train --prune` end to end (distilled, sharded, accumulated, resumed)."""

import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

import jaxqa
from jaxqa import models, train
from jaxqa.models import bert
from jaxqa.models.encoder import SpanModel, per_layer
from jaxqa.training import pruning
from jaxqa.training.pruning import KERNELS, Pruning
from jaxqa.training.state import TrainState
from jaxqa.training.step import make_train_step

CONFIG = bert.Config(vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96)


def method(name, remaining=0.4, total=20, warmup=2, block=16, penalty=400.0):
    return Pruning(name, remaining, total, warmup, 1.0, 2.0, penalty, block)


def by_layer(runs: dict) -> dict:
    """Scores, choices or masks as pruning keeps them, {run: {name: (L, ...)}},
    one layer per name: {"layer_i": {name: (...)}}."""
    layers = {}
    for run, named in runs.items():
        first, last = map(int, run.split("_to_"))
        for k in range(last - first + 1):
            layers[f"layer_{first + k}"] = jax.tree_util.tree_map(lambda leaf, k=k: leaf[k], named)
    return layers


def params_and_scores(name, seed=0):
    params = jax.device_get(nn.meta.unbox(models.init_params(SpanModel(CONFIG), jax.random.key(seed))))
    prune = method(name)
    scores = prune.init_scores(params)
    rng = np.random.default_rng(seed)
    scores = (
        None
        if scores is None
        else jax.tree_util.tree_map(lambda s: rng.normal(size=s.shape).astype(np.float32), scores)
    )
    return prune, params, scores


def reference_share(step, total, warmup, remaining, initial_warmup=1, final_warmup=2):
    """The threshold schedule of movement pruning's training script, for the share kept."""
    if step <= initial_warmup * warmup:
        return 1.0
    if step > total - final_warmup * warmup:
        return remaining
    mul = 1 - (step - initial_warmup * warmup) / (total - (initial_warmup + final_warmup) * warmup)
    return remaining + (1 - remaining) * mul**3


@pytest.mark.parametrize("total, warmup", [(100, 10), (12, 1), (1000, 0), (30, 3)])
def test_schedule_matches_the_reference(total, warmup):
    prune = method("movement", remaining=0.3, total=total, warmup=warmup)
    got = [float(prune.share(step)) for step in range(total + 1)]
    want = [reference_share(step, total, warmup, 0.3) for step in range(total + 1)]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert got[-1] == pytest.approx(0.3)  # however short the run, it ends at its target


def sort_threshold(values, covers, share):
    """The value at which the highest values, sorted, reach floor(share * all) covered
    weights (at least one value); the share times the count is rounded in float32, as in the step."""
    flat = np.concatenate([v.ravel() for v in values])
    weight = np.concatenate([np.full(v.size, c) for v, c in zip(values, covers)])
    order = np.argsort(-flat, kind="stable")
    need = max(np.floor(np.float32(share) * np.float32(weight.sum())), 1)
    return flat[order][np.searchsorted(np.cumsum(weight[order]), need)]


def reference_top(x, share):
    """The k largest entries, and any equal to the smallest of them."""
    return x >= sort_threshold([x], [1], share)


def reference_global(values, covers, share):
    """Each of `values`, flat: the highest of all of them, until they cover floor(share * all)
    weights, and any equal to the last."""
    threshold = sort_threshold(values, covers, share)
    return [v.ravel() >= threshold for v in values]


STEP = 9  # midway through the cubic decay of `method`'s schedule


def test_magnitude_keeps_the_largest_weights_of_each_kernel():
    prune, params, _ = params_and_scores("magnitude")
    share = float(prune.share(STEP))
    masks = by_layer(prune.masks(None, prune.select(params, None, STEP)))
    layers = per_layer(CONFIG, params)
    for layer in ("layer_0", "layer_1"):
        for name in KERNELS:
            kernel = np.asarray(layers[layer][name]["kernel"])
            np.testing.assert_array_equal(np.asarray(masks[layer][name]) > 0, reference_top(np.abs(kernel), share))


def test_movement_keeps_the_top_scores_of_each_kernel():
    prune, params, scores = params_and_scores("movement")
    masks = by_layer(prune.masks(scores, prune.select(params, scores, STEP)))
    for layer, named in by_layer(scores).items():
        for name, s in named.items():
            np.testing.assert_array_equal(
                np.asarray(masks[layer][name]) > 0, reference_top(s, float(prune.share(STEP)))
            )


def test_soft_movement_keeps_the_top_scores_of_all_kernels():
    prune, params, scores = params_and_scores("soft-movement")
    scores["0_to_1"]["query"][0] += 1.0  # one kernel's weights matter more: it keeps more of them
    chosen = prune.select(params, scores, STEP)
    masks = by_layer(prune.masks(scores, chosen))
    layers = by_layer(scores)
    keys = [(layer, name) for layer in sorted(layers) for name in sorted(layers[layer])]
    want = reference_global([layers[l][n] for l, n in keys], [1] * len(keys), float(prune.share(STEP)))
    for (layer, name), keep in zip(keys, want):
        np.testing.assert_array_equal(np.asarray(masks[layer][name]).ravel() > 0, keep)
    kept = {key: float(np.mean(np.asarray(masks[key[0]][key[1]]))) for key in keys}
    assert kept["layer_0", "query"] > max(v for k, v in kept.items() if k != ("layer_0", "query")) + 0.2
    _, kept = prune.apply(params, scores, chosen)
    assert float(kept) == pytest.approx(float(prune.share(STEP)), abs=1e-4)


def test_hybrid_keeps_blocks_and_whole_units():
    prune, params, scores = params_and_scores("hybrid")
    layers = by_layer(scores)
    assert layers["layer_0"]["query"].shape == (4, 4) and layers["layer_0"]["feed_forward"].shape == (96,)
    chosen = prune.select(params, scores, STEP)
    masks = by_layer(prune.masks(scores, chosen))
    keys = [(layer, name) for layer in sorted(layers) for name in sorted(layers[layer])]
    covers = [2 * 64 if name == "feed_forward" else 16 * 16 for _, name in keys]
    want = dict(zip(keys, reference_global([layers[l][n] for l, n in keys], covers, float(prune.share(STEP)))))
    pruned = per_layer(CONFIG, prune.apply(params, scores, chosen)[0])
    for layer in layers:
        for name in pruning.ATTENTION:
            block_keep = want[layer, name].reshape(4, 4)
            np.testing.assert_array_equal(
                np.asarray(masks[layer][name]) > 0, np.kron(block_keep, np.ones((16, 16))) > 0
            )
        unit_keep = want[layer, "feed_forward"]
        inner, outer = (np.asarray(pruned[layer][n]["kernel"]) for n in ("intermediate", "output"))
        np.testing.assert_array_equal(inner.any(axis=0), unit_keep)  # a unit goes with its column and its row
        np.testing.assert_array_equal(outer.any(axis=1), unit_keep)


@pytest.mark.parametrize("share", [0.0005, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("name", ["movement", "soft-movement"])
def test_ties_and_signed_zeros_are_kept_as_a_sort_keeps_them(name, share):
    """Scores of few distinct values, -0.0 and +0.0 among them: every score equal
    to the threshold a sort finds is kept."""
    prune, params, scores = params_and_scores(name)
    rng = np.random.default_rng(3)
    scores = jax.tree_util.tree_map(lambda s: np.round(rng.normal(size=s.shape), 1).astype(np.float32), scores)
    for named in scores.values():
        for s in named.values():
            s.ravel()[: s.size // 4] = 0.0
            s.ravel()[s.size // 4 : s.size // 2] = -0.0
    prune = method(name, remaining=share)
    chosen = by_layer(prune.select(params, scores, prune.total_steps))  # at `share`
    layers = by_layer(scores)
    keys = [(layer, n) for layer in sorted(layers) for n in sorted(layers[layer])]
    want = (
        [reference_top(layers[l][n], share).ravel() for l, n in keys]
        if name == "movement"
        else reference_global([layers[l][n] for l, n in keys], [1] * len(keys), share)
    )
    for (layer, n), keep in zip(keys, want):
        np.testing.assert_array_equal(np.asarray(chosen[layer][n]).ravel() > 0, keep)
    values = layers["layer_0"]["query"]
    assert float(pruning._highest([values], [3], 1.0001)) == values.min()  # a share above all there is


def test_blocks_shrink_where_heads_are_narrower():
    assert pruning.block_edge(32, 64, 768) == 32  # BERT-base
    assert pruning.block_edge(32, 32, 384) == 32  # MiniLM
    assert pruning.block_edge(32, 16, 64) == 16  # tiny
    assert pruning.block_edge(32, 24, 96) == 8


@pytest.mark.parametrize("name", ["movement", "soft-movement", "hybrid"])
def test_scores_get_the_gradient_straight_through(name):
    """d(sum C * masked W)/dS is C * W for a score per weight, and its sum over
    the weights a score covers otherwise."""
    prune, params, scores = params_and_scores(name)
    rng = np.random.default_rng(1)
    runs = params["layers"]
    weights = {
        run: {n: rng.normal(size=runs[run][n]["kernel"].shape).astype(np.float32) for n in KERNELS} for run in runs
    }

    chosen = prune.select(params, scores, STEP)

    def objective(scores):
        pruned, _ = prune.apply(params, scores, chosen)
        return sum((pruned["layers"][r][n]["kernel"] * weights[r][n]).sum() for r in weights for n in KERNELS)

    grads = by_layer(jax.grad(objective)(scores))
    kernels, weights = per_layer(CONFIG, params), by_layer(weights)
    for layer in grads:
        moved = {n: weights[layer][n] * np.asarray(kernels[layer][n]["kernel"]) for n in KERNELS}  # C * W
        if name != "hybrid":
            for n in KERNELS:
                np.testing.assert_allclose(grads[layer][n], moved[n], rtol=1e-5, atol=1e-6)
            continue
        for n in pruning.ATTENTION:
            block_sums = moved[n].reshape(4, 16, 4, 16).sum(axis=(1, 3))
            np.testing.assert_allclose(grads[layer][n], block_sums, rtol=1e-4, atol=1e-5)
        unit_sums = moved["intermediate"].sum(axis=0) + moved["output"].sum(axis=1)
        np.testing.assert_allclose(grads[layer]["feed_forward"], unit_sums, rtol=1e-4, atol=1e-5)


def test_magnitude_and_movement_pass_no_gradient_to_pruned_weights():
    for name in ("magnitude", "movement"):
        prune, params, scores = params_and_scores(name)
        chosen = prune.select(params, scores, STEP)
        grads = jax.grad(
            lambda p, prune=prune, scores=scores, chosen=chosen: sum(
                prune.apply(p, scores, chosen)[0]["layers"]["0_to_1"][n]["kernel"][0].sum() for n in KERNELS
            )
        )(params)
        grads, masks = per_layer(CONFIG, grads), by_layer(prune.masks(scores, chosen))
        for n in KERNELS:
            np.testing.assert_array_equal(np.asarray(grads["layer_0"][n]["kernel"]), np.asarray(masks["layer_0"][n]))


@pytest.mark.parametrize("name", ["soft-movement", "hybrid"])
def test_penalty_pushes_every_weight_alike_and_grows_with_the_share_pruned(name):
    prune, params, scores = params_and_scores(name)
    assert [float(w) for w in prune.penalty_term(params, scores, 0)] == [0.0, 0.0]  # before pruning starts
    weight, term = prune.penalty_term(params, scores, prune.total_steps)
    # The sigmoids' soft share of weights kept, each score standing for the weights it covers.
    cover = lambda n: 1 if name == "soft-movement" else 2 * 64 if n == "feed_forward" else 16 * 16
    sigmoid = lambda s: 1 / (1 + np.exp(-s))
    covered = sum(cover(n) * sigmoid(s).sum() for named in scores.values() for n, s in named.items())
    total = sum(cover(n) * s.size for named in scores.values() for n, s in named.items())
    assert total == 2 * (4 * 64 * 64 + 2 * 64 * 96)  # every encoder Linear weight, once
    assert float(weight) == pytest.approx(400.0) and float(term) == pytest.approx(400.0 * covered / total, rel=1e-5)
    grads = jax.grad(lambda s: prune.penalty_term(params, s, prune.total_steps)[1])(
        jax.tree_util.tree_map(np.zeros_like, scores)
    )  # at zero every sigmoid has the same slope
    for named in grads.values():
        for n, g in named.items():
            np.testing.assert_allclose(g, 400.0 * 0.25 * cover(n) / total, rtol=1e-5)
    assert [float(w) for w in method("movement").penalty_term(params, scores, 20)] == [0.0, 0.0]


def searches(jaxpr) -> int:
    """How many 32-pass bit searches (`pruning._highest`, a scan of length 32) a jaxpr
    holds, those of the jaxprs inside it included."""
    found = 0
    for eqn in jaxpr.eqns:
        found += eqn.primitive.name == "scan" and eqn.params["length"] == 32
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    found += searches(inner)
    return found


@pytest.mark.parametrize("name", ["movement", "hybrid"])
def test_a_step_chooses_what_to_keep_once_for_all_its_micro_batches(name):
    """The searches that choose the kept weights run outside the scan over micro-batches."""
    prune, params, scores = params_and_scores(name)
    tx = score_tx = optax.sgd(0.1)
    state = TrainState.create(params, tx, scores, score_tx, step=STEP)
    rng = np.random.default_rng(0)
    batch = {
        "input_ids": rng.integers(5, 100, (2, 4, 16)),
        "attention_mask": np.ones((2, 4, 16)),
        "token_type_ids": np.zeros((2, 4, 16)),
        "start_positions": rng.integers(0, 16, (2, 4)),
        "end_positions": rng.integers(0, 16, (2, 4)),
    }  # two micro-batches of 4
    batch = {key: jnp.asarray(value, jnp.int32) for key, value in batch.items()}
    step = make_train_step(SpanModel(CONFIG), tx, 0, prune=prune, score_tx=score_tx)
    jaxpr = jax.make_jaxpr(step)(state, batch, {}).jaxpr
    micro = [eqn for eqn in jaxpr.eqns if eqn.primitive.name == "scan" and eqn.params["length"] == 2]
    assert len(micro) == 1 and searches(micro[0].params["jaxpr"].jaxpr) == 0
    assert searches(jaxpr) == (6 if name == "movement" else 1)  # one per stacked kernel, or one threshold for all


# ---------------------------------------------------------------- jaxqa.train --prune


def train_flags(squad, run_dir, *extra):
    return [
        "--model",
        "bert",
        "--config",
        "bert:tiny",
        "--tokenizer",
        str(squad.parent),
        "--train-file",
        str(squad),
        "--eval-file",
        str(squad),
        "--max-eval-examples",
        "12",
        "--run-dir",
        str(run_dir),
        "--max-steps",
        "12",
        "--batch-size",
        "8",
        "--log-every",
        "1",
        *extra,
    ]


def run_all(runs, devices=1):
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        [sys.executable, "-c", f"from jaxqa import train\nfor a in {runs!r}:\n    assert train.main(a) == 0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_hybrid_pruning_with_a_teacher_on_a_mesh_ends_compact(squad, teacher, tmp_path):
    extra = ("--prune", "hybrid", "--prune-remaining", "0.5", "--teacher", str(teacher), "--grad-accum", "2")
    runs = [
        train_flags(squad, tmp_path / name, "--mesh", mesh, *extra)
        for name, mesh in (("one", "data=1,model=1"), ("mesh", "data=2,model=2"))
    ]
    run_all(runs, devices=4)
    one, mesh = records(tmp_path / "one"), records(tmp_path / "mesh")
    steps = [r for r in one if "loss" in r]
    assert len(steps) == 12 and {"remaining", "penalty", "penalty_weight", "distill_loss"} <= set(steps[0])
    assert steps[0]["remaining"] == 1.0 and steps[-1]["remaining"] == pytest.approx(0.5, abs=0.02)
    for key in ("loss", "span_loss", "distill_loss", "remaining"):
        np.testing.assert_allclose([r[key] for r in mesh if key in r], [r[key] for r in steps], rtol=1e-4)

    report = json.loads((tmp_path / "one" / "pruning.json").read_text())
    assert report == json.loads((tmp_path / "mesh" / "pruning.json").read_text())
    assert report["method"] == "hybrid" and report["remaining"] == pytest.approx(0.5, abs=0.02)
    before, after = report["before"], report["after"]
    assert before["feed_forward_units"] == [128, 128] and before["heads"] == [4, 4]
    assert sum(after["feed_forward_units"]) < 256 and after["parameters"] < before["parameters"]
    assert after["flops_per_sequence"] < before["flops_per_sequence"]

    # The compact model on disk computes what the masked model of the last checkpoint computes.
    compact = jaxqa.load_pretrained(tmp_path / "one" / "model")
    assert jaxqa.load_pretrained(tmp_path / "one" / "best").config == compact.config  # best/ is compact too
    assert [compact.config.ffn(i) for i in range(2)] == after["feed_forward_units"]
    assert [compact.config.heads(i) for i in range(2)] == after["heads"]
    state = ocp.StandardCheckpointer().restore((tmp_path / "one" / "checkpoints" / "12" / "default").absolute())
    prune = Pruning("hybrid", 0.5, 12, 1, 1.0, 2.0, 400.0, 16)
    masked, _ = prune.apply(state["params"], state["scores"], prune.select(state["params"], state["scores"], 12))
    ids = np.arange(1, 33, dtype=np.int32)[None] % 90 + 5
    inputs = ids, np.ones_like(ids), np.zeros_like(ids)
    dense = SpanModel(bert.SIZES["tiny"]).apply({"params": masked}, *inputs)
    for a, b in zip(compact(*inputs), dense):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=0)


@pytest.mark.slow
def test_a_compact_model_trains_answers_and_prunes_again(squad, tmp_path):
    run_all([train_flags(squad, tmp_path / "first", "--prune", "hybrid", "--prune-remaining", "0.4")])
    compact = tmp_path / "first" / "model"
    assert json.loads((compact / "config.json").read_text()).get("intermediate_sizes")
    run_all(
        [
            train_flags(squad, tmp_path / "again", "--init", str(compact), "--max-steps", "3"),
            train_flags(
                squad, tmp_path / "more", "--init", str(compact), "--prune", "magnitude", "--prune-remaining", "0.5"
            ),
        ]
    )
    again = jaxqa.load_pretrained(tmp_path / "again" / "model")
    assert again.config == jaxqa.load_pretrained(compact).config
    qa = jaxqa.pipeline(tmp_path / "again" / "model", precision="fp32")
    answer = qa(question="Where does the river of arda stand?", context="The river of arda stands near gondor.")
    assert isinstance(answer["answer"], str)
    assert "remaining" in records(tmp_path / "more")[0]


def test_pruning_another_family_is_refused(squad, tmp_path, capsys):
    args = train_flags(squad, tmp_path / "run", "--prune", "hybrid")
    args[args.index("bert")] = "squeezebert"
    args[args.index("bert:tiny")] = "squeezebert:tiny"
    assert train.main(args) == 2
    err = capsys.readouterr().err
    assert "--prune hybrid" in err and "squeezebert" in err and not (tmp_path / "run").exists()
