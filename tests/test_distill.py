"""Knowledge distillation in the training step: the loss, its gradient, its
limits, and `jaxqa.train --teacher` on one device and on a mesh."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from safetensors.numpy import load_file

from jaxqa import checkpoint, models, train
from jaxqa.models import bert
from jaxqa.models.encoder import SpanModel
from jaxqa.training import optim
from jaxqa.training.state import TrainState
from jaxqa.training.step import Distillation, distill_loss, make_train_step

QUIET = dataclasses.replace(bert.SIZES["tiny"], hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def batch_of(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    batch = {
        "input_ids": rng.integers(5, 500, (8, 32)),
        "attention_mask": np.ones((8, 32)),
        "token_type_ids": np.zeros((8, 32)),
        "start_positions": rng.integers(0, 32, 8),
        "end_positions": rng.integers(0, 32, 8),
    }
    return {k: jnp.asarray(v, jnp.int32)[None] for k, v in batch.items()}  # one micro-batch


def one_step(distill, teacher_params, params):
    tx = optim.build("lamb", lambda step: 1e-3, 0.01)
    state = TrainState.create(params, tx)
    return jax.jit(make_train_step(SpanModel(QUIET), tx, seed=0, distill=distill))(state, batch_of(), teacher_params)


def fresh(seed: int):
    return nn.meta.unbox(models.init_params(SpanModel(QUIET), jax.random.key(seed)))


def test_a_student_identical_to_its_teacher_has_no_distillation_loss():
    params = fresh(0)
    _, metrics = one_step(Distillation(SpanModel(QUIET), 0.5, 2.0), params, params)
    assert abs(float(metrics["distill_loss"])) < 1e-6
    assert float(metrics["loss"]) == pytest.approx(0.5 * float(metrics["span_loss"]), rel=1e-6)


def test_distillation_loss_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    start, end, t_start, t_end = (jnp.asarray(rng.normal(0, 2, (3, 7)), jnp.float32) for _ in range(4))
    check_grads(
        lambda s, e: distill_loss(s, e, t_start, t_end, 2.0),
        (start, end),
        order=1,
        modes=("rev",),
        atol=2e-3,
        rtol=2e-3,
    )
    # Against the definition, on one window: T² · ½ Σ p (log p − log q) over both heads.
    p = jax.nn.softmax(t_start / 2.0)
    q = jax.nn.softmax(start / 2.0)
    by_hand = 4.0 * 0.5 * float((p * (jnp.log(p) - jnp.log(q))).sum(-1).mean())
    assert float(distill_loss(start, t_start, t_start, t_start, 2.0)) == pytest.approx(by_hand, rel=1e-5)


@pytest.mark.slow
def test_alpha_zero_is_plain_fine_tuning_bit_for_bit():
    params = fresh(0)
    plain, plain_metrics = one_step(None, {}, params)
    taught, taught_metrics = one_step(Distillation(SpanModel(QUIET), 0.0, 2.0), fresh(1), params)
    assert float(plain_metrics["loss"]) == float(taught_metrics["loss"])
    for a, b in zip(jax.tree_util.tree_leaves(plain.params), jax.tree_util.tree_leaves(taught.params)):
        np.testing.assert_array_equal(a, b)


def flags(squad: Path, teacher: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        "--model",
        "distilbert",
        "--config",
        "distilbert:tiny",
        "--tokenizer",
        str(squad.parent),
        "--train-file",
        str(squad),
        "--eval-file",
        "",
        "--teacher",
        str(teacher),
        "--run-dir",
        str(run_dir),
        "--max-steps",
        "3",
        *extra,
    ]


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_a_distilled_run_on_a_mesh_matches_one_device(squad, teacher, tmp_path):
    runs = [
        flags(squad, teacher, tmp_path / name, "--mesh", mesh)
        for name, mesh in (("one", "data=1,model=1"), ("mesh", "data=4,model=2"))
    ]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        [sys.executable, "-c", f"from jaxqa import train\nfor a in {runs!r}:\n    assert train.main(a) == 0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    one, mesh = records(tmp_path / "one"), records(tmp_path / "mesh")
    steps = [r for r in one if "loss" in r]
    assert len(steps) == 3 and all({"span_loss", "distill_loss"} <= set(r) for r in steps)
    for key in ("loss", "span_loss", "distill_loss"):
        np.testing.assert_allclose([r[key] for r in mesh if key in r], [r[key] for r in steps], rtol=1e-5)
    mine, theirs = (load_file(tmp_path / name / "model" / "params.safetensors") for name in ("mesh", "one"))
    for key in set(theirs) - {"qa_outputs/bias"}:  # its gradient is pure rounding noise (see test_train.py)
        np.testing.assert_allclose(mine[key], theirs[key], atol=2e-5, err_msg=key)


def test_a_teacher_with_another_tokenizer_is_refused(squad, teacher, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    for name in ("config.json", "params.safetensors"):
        (other / name).write_bytes((teacher / name).read_bytes())
    (other / "vocab.txt").write_text((squad.parent / "vocab.txt").read_text() + "extra\n")
    assert train.main(flags(squad, other, tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert str(other) in err and str(squad.parent) in err and "tokenize differently" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_a_changed_teacher_is_refused_on_resume(squad, teacher, tmp_path, capsys):
    mine = tmp_path / "teacher"
    config = bert.SIZES["tiny"]
    params = jax.device_get(nn.meta.unbox(models.init_params(SpanModel(config), jax.random.key(7))))
    checkpoint.save_pretrained(mine, "bert", config, params, squad.parent)
    assert train.main(flags(squad, mine, tmp_path / "run", "--max-steps", "1")) == 0
    params["qa_outputs"]["bias"] = params["qa_outputs"]["bias"] + 1.0  # the same path, other weights
    checkpoint.save_pretrained(mine, "bert", config, params, squad.parent, overwrite=True)
    capsys.readouterr()
    assert train.main(flags(squad, mine, tmp_path / "run", "--max-steps", "1")) == 2
    err = capsys.readouterr().err
    assert (
        "the --teacher's weights changed" in err
        and "--allow-changed-settings" in err
        and len(err.strip().splitlines()) == 1
    )
