"""`python -m jaxqa.train` end to end on tiny configs: sharded over 8 fake CPU
devices, over two processes, killed and resumed, and its refusals."""

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from jaxqa import models
from jaxqa.models import bert
from jaxqa.models.encoder import SpanModel
from jaxqa.training import optim
from jaxqa.training.state import TrainState
from jaxqa.training.step import make_train_step

MODELS = ("bert", "squeezebert", "mobilebert")
MESHES = ("data=1,model=1", "data=8,model=1", "data=4,model=2", "data=2,model=4")
WEIGHT_ATOL = 2e-5
# The span head's bias shifts every start (end) logit alike, which a softmax
# ignores: its exact gradient is 0, and what is computed is rounding noise that
# Adam scales up to a full learning-rate step in whichever direction it falls.
NOISE_ONLY = {"qa_outputs/bias"}


def flags(squad: Path, model: str, run_dir: Path, *extra: str) -> list[str]:
    return [
        "--model",
        model,
        "--config",
        f"{model}:tiny",
        "--tokenizer",
        str(squad.parent),
        "--train-file",
        str(squad),
        "--eval-file",
        "",
        "--run-dir",
        str(run_dir),
        *extra,
    ]


def run(args: list[str], devices: int = 1, check: bool = True, **popen) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "JAX_PLATFORMS": "cpu",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }
    result = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=900, **popen)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def losses(run_dir: Path) -> list[float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if "loss" in r]


def evaluation(run_dir: Path) -> dict:
    """The final evaluation record of a run, without its timing."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    final = [r for r in records if "exact" in r][-1]
    return {k: v for k, v in final.items() if k != "eval_seconds"}


def weights(run_dir: Path) -> dict[str, np.ndarray]:
    return load_file(run_dir / "model" / "params.safetensors")


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_meshes_give_the_same_losses_and_weights(squad, tmp_path, model):
    # One process, 8 devices, the four meshes in turn.
    runs = [
        flags(squad, model, tmp_path / mesh.replace(",", "_"), "--mesh", mesh, "--max-steps", "3") for mesh in MESHES
    ]
    run(["-c", f"from jaxqa import train\nfor args in {runs!r}:\n    assert train.main(args) == 0"], devices=8)
    reference = tmp_path / MESHES[0].replace(",", "_")
    assert len(losses(reference)) == 3 and all(np.isfinite(losses(reference)))
    for mesh in MESHES[1:]:
        other = tmp_path / mesh.replace(",", "_")
        np.testing.assert_allclose(losses(other), losses(reference), rtol=1e-5, err_msg=mesh)
        mine, theirs = weights(other), weights(reference)
        assert set(mine) == set(theirs)
        for key in set(theirs) - NOISE_ONLY:
            np.testing.assert_allclose(mine[key], theirs[key], atol=WEIGHT_ATOL, err_msg=f"{mesh} {key}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one(squad, tmp_path):
    single = tmp_path / "single"
    evaluated = ["--eval-file", str(squad), "--max-eval-examples", "12", "--eval-batch-size", "8"]
    run(
        [
            "-m",
            "jaxqa.train",
            *flags(squad, "bert", single, "--mesh", "data=4,model=1", "--max-steps", "3", *evaluated),
        ],
        devices=4,
    )
    port = free_port()
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jaxqa.train",
                *flags(
                    squad,
                    "bert",
                    tmp_path / "multi",
                    "--mesh",
                    "data=4,model=1",
                    "--max-steps",
                    "3",
                    *evaluated,
                    "--coordinator",
                    f"127.0.0.1:{port}",
                    "--num-processes",
                    "2",
                    "--process-id",
                    str(i),
                ),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-3000:]
    np.testing.assert_allclose(losses(tmp_path / "multi"), losses(single), rtol=1e-5)
    assert evaluation(tmp_path / "multi") == evaluation(single) and "f1" in evaluation(single)
    for key, value in weights(single).items():
        if key not in NOISE_ONLY:
            np.testing.assert_allclose(weights(tmp_path / "multi")[key], value, atol=WEIGHT_ATOL, err_msg=key)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["plain", "distilled", "pruned", "unrolled"])
def test_killed_run_resumes_bit_for_bit(squad, teacher, tmp_path, recipe):
    extra = ["--prune", "hybrid", "--grad-accum", "2"] if recipe == "pruned" else []  # scores and schedule resume too
    if recipe == "unrolled":  # every layer compiled on its own, each recomputed in the backward pass
        extra = ["--no-scan-layers", "--remat", "layer"]
    if recipe == "distilled":
        extra = ["--teacher", str(teacher)]
    args = lambda run_dir: [
        "-m",
        "jaxqa.train",
        *flags(squad, "bert", run_dir, "--max-steps", "8", "--save-every", "2", *extra),
    ]
    run(args(tmp_path / "whole"))
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.Popen(
        [sys.executable, *args(tmp_path / "killed")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    checkpoints = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 600
    while time.time() < deadline and not (checkpoints / "4").is_dir() and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (checkpoints / "4").is_dir() and not (checkpoints / "8").is_dir(), "the run was not killed partway"
    resumed = run(args(tmp_path / "killed"))
    assert "resumed from" in resumed.stdout
    lines = (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
    marks = [r["resumed_from_step"] for r in map(json.loads, lines) if "resumed_from_step" in r]
    assert len(marks) == 1 and 4 <= marks[0] < 8  # the steps logged again after it are marked
    whole, killed = weights(tmp_path / "whole"), weights(tmp_path / "killed")
    assert whole.keys() == killed.keys()
    for key in whole:
        assert np.array_equal(whole[key], killed[key]), key


@pytest.mark.slow
def test_a_run_resumes_with_the_layout_it_started_with(squad, tmp_path):
    """Checkpoints hold one layer per name whatever the layout trained: a run
    scanned goes on unrolled only when asked, and then as it would have."""
    args = lambda run_dir, steps, *extra: [
        "-m",
        "jaxqa.train",
        *flags(squad, "bert", run_dir, "--max-steps", str(steps), "--save-every", "2", *extra),
    ]
    run(args(tmp_path / "scanned", 2))
    shutil.copytree(tmp_path / "scanned", tmp_path / "switched")
    # Both go on to 4 steps (a longer learning-rate schedule from step 2 on), one of them unrolled.
    run(args(tmp_path / "scanned", 4, "--allow-changed-settings"))
    refused = run(args(tmp_path / "switched", 4, "--no-scan-layers"), check=False)
    assert refused.returncode == 2 and "--scan-layers: True -> False" in refused.stderr
    run(args(tmp_path / "switched", 4, "--no-scan-layers", "--allow-changed-settings"))
    np.testing.assert_allclose(losses(tmp_path / "switched"), losses(tmp_path / "scanned"), rtol=1e-5)
    for key, value in weights(tmp_path / "scanned").items():
        if key not in NOISE_ONLY:
            np.testing.assert_allclose(weights(tmp_path / "switched")[key], value, atol=WEIGHT_ATOL, err_msg=key)


@pytest.mark.slow
def test_sigterm_saves_and_the_same_command_finishes(squad, tmp_path):
    args = ["-m", "jaxqa.train", *flags(squad, "bert", tmp_path / "run", "--max-steps", "400", "--save-every", "1000")]
    proc = subprocess.Popen(
        [sys.executable, *args],
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 600
    while time.time() < deadline and not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM and "stopped by signal" in out
    saved = [int(p.name) for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.isdigit()]
    assert saved and 3 <= max(saved) < 400


@pytest.mark.slow
def test_non_finite_loss_stops_with_the_step_and_a_good_checkpoint(squad, tmp_path):
    result = run(
        [
            "-m",
            "jaxqa.train",
            *flags(
                squad,
                "bert",
                tmp_path / "run",
                "--max-steps",
                "6",
                "--learning-rate",
                "1e30",
                "--warmup-proportion",
                "0",
            ),
        ],
        check=False,
    )
    assert result.returncode == 2
    assert "non-finite loss or gradient at step" in result.stderr and "Traceback" not in result.stderr
    bad = int(result.stderr.split("at step ")[1].split(";")[0])
    saved = sorted(int(p.name) for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.isdigit())
    assert saved[-1] == bad  # the state after step `bad - 1` updates, before the bad one


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--mesh", "data=3"], "--mesh"),
        (["--grad-accum", "3"], "--grad-accum"),
        (["--mesh", "data=2,model=1", "--batch-size", "7"], "not divisible by the data axis"),
        (["--precision", "fp8"], "--precision"),
        (["--optimizer", "sgd"], "--optimizer"),
        (["--init", "no/such-model-anywhere"], "--init"),
        (["--train-file", "{not_json}"], "not a JSON file"),
        (["--eval-file", "no-such-file.json"], "--eval-file"),
        (["--prune", "random"], "--prune"),
        (["--prune", "movement", "--prune-remaining", "0"], "--prune-remaining"),
        (["--prune-block", "0"], "--prune-block"),
    ],
)
def test_bad_flags_are_refused_before_compiling(squad, tmp_path, extra, message):
    extra = [arg.format(not_json=squad.parent / "vocab.txt") for arg in extra]
    result = run(["-m", "jaxqa.train", *flags(squad, "bert", tmp_path / "run"), *extra], devices=2, check=False)
    assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "compiled" not in result.stdout


def test_no_arguments_offline_says_what_to_do(tmp_path):
    result = run(["-m", "jaxqa.train", "--model", "squeezebert", "--run-dir", str(tmp_path / "run")], check=False)
    assert result.returncode == 2 and "--init" in result.stderr and "local folder" in result.stderr, result.stderr
    result = run(["-m", "jaxqa.train", "--model", "unknown"], check=False)
    assert result.returncode == 2 and "--model" in result.stderr


@pytest.mark.slow
def test_checkpoint_of_another_model_is_refused(squad, tmp_path):
    run(["-m", "jaxqa.train", *flags(squad, "bert", tmp_path / "run", "--max-steps", "1")])
    result = run(["-m", "jaxqa.train", *flags(squad, "squeezebert", tmp_path / "run", "--max-steps", "1")], check=False)
    assert result.returncode == 2 and "another model" in result.stderr and "--run-dir" in result.stderr


def damage(checkpoint: Path, only_arrays: bool) -> None:
    """Overwrites the checkpoint's files (or only its array data) with zeros, as a bad disk or copy would."""
    for path in checkpoint.rglob("*"):
        if path.is_file() and path.stat().st_size > 0 and (not only_arrays or path.parent.name == "d"):
            path.write_bytes(b"\0" * 16)


def saved_steps(checkpoints: Path) -> list[int]:
    return sorted(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())


@pytest.mark.slow
def test_damaged_or_half_written_checkpoints_are_not_used(squad, tmp_path):
    # Each rerun trains one step more.
    args = [
        "-m",
        "jaxqa.train",
        *flags(squad, "bert", tmp_path / "run", "--save-every", "1", "--allow-changed-settings"),
    ]
    run([*args, "--max-steps", "2"])
    checkpoints = tmp_path / "run" / "checkpoints"
    # An interrupted save leaves a temporary folder, never a step folder: it is ignored.
    (checkpoints / "7.orbax-checkpoint-tmp-1").mkdir()
    resumed = run([*args, "--max-steps", "3"])
    assert "resumed from" in resumed.stdout and "at step 2" in resumed.stdout
    # A damaged latest checkpoint is set aside, said in one line, and the run goes on from the one before it.
    damage(checkpoints / "3", only_arrays=True)  # orbax gives up with reads in flight
    resumed = run([*args, "--max-steps", "4"])
    warning = [line for line in resumed.stdout.splitlines() if "cannot read" in line]
    assert len(warning) == 1 and "step 3" in warning[0] and "resuming from step 2" in warning[0], resumed.stdout
    assert "at step 2" in resumed.stdout and (checkpoints / "3.damaged").is_dir()
    # Nothing on stderr but the progress bar: no traceback, no report of the reads that orbax left in flight.
    assert [line for line in resumed.stderr.splitlines() if line.strip() and "%|" not in line] == [], resumed.stderr[
        -2000:
    ]
    assert saved_steps(checkpoints) == [2, 3, 4]
    # When none can be read, the run stops in one line naming the folder, and moves nothing.
    for step in (2, 3, 4):
        damage(checkpoints / str(step), only_arrays=False)
    result = run([*args, "--max-steps", "5"], check=False)
    assert result.returncode == 2 and "cannot restore any checkpoint" in result.stderr, result.stderr[-2000:]
    assert f"{checkpoints}:" in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr[-2000:]
    assert saved_steps(checkpoints) == [2, 3, 4]


def one_step(model, accum: int):
    """Loss and parameters after one LAMB step on a fixed batch of 8, as `accum` micro-batches."""
    tx = optim.build("lamb", lambda step: 1e-3, 0.01)
    params = nn.meta.unbox(models.init_params(model, jax.random.key(0)))
    state = TrainState.create(params, tx)
    rng = np.random.default_rng(0)
    batch = {
        "input_ids": rng.integers(5, 500, (8, 32)),
        "attention_mask": np.ones((8, 32)),
        "token_type_ids": np.zeros((8, 32)),
        "start_positions": rng.integers(0, 32, 8),
        "end_positions": rng.integers(0, 32, 8),
    }
    stacked = {k: jnp.asarray(v, jnp.int32).reshape(accum, 8 // accum, *v.shape[1:]) for k, v in batch.items()}
    state, metrics = jax.jit(make_train_step(model, tx, seed=0))(state, stacked, {})
    return float(metrics["loss"]), state.params


def test_gradient_accumulation_matches_one_big_batch():
    config = dataclasses.replace(bert.SIZES["tiny"], hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    loss_1, params_1 = one_step(SpanModel(config), accum=1)
    loss_4, params_4 = one_step(SpanModel(config), accum=4)
    assert abs(loss_1 - loss_4) < 1e-5
    for a, b in zip(jax.tree_util.tree_leaves(params_1), jax.tree_util.tree_leaves(params_4)):
        np.testing.assert_allclose(a, b, atol=2e-5)


@pytest.mark.slow
def test_bfloat16_compute_keeps_float32_master_weights():
    loss_32, _ = one_step(SpanModel(bert.SIZES["tiny"]), accum=1)
    loss_16, params_16 = one_step(SpanModel(bert.SIZES["tiny"], dtype=jnp.bfloat16), accum=1)
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(params_16))
    assert np.isfinite(loss_16) and abs(loss_16 - loss_32) < 0.05 * abs(loss_32)
