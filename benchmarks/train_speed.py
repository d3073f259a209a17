"""Train-step speed of each model's tiny and base configs on this machine: the
compile time of the sharded train step and steady-state steps per second.

    python benchmarks/train_speed.py [--batch-size 8] [--seq-len 384] [--steps 5]

Random weights and random token ids (speed does not depend on them); LAMB,
float32 on CPUs and bfloat16 compute on accelerators, as `jaxqa.train` does.
Results go to benchmarks/results/train_speed_<platform>.json.
"""

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxqa import models, sharding
from jaxqa.models.encoder import SpanModel
from jaxqa.training import optim
from jaxqa.training.state import TrainState
from jaxqa.training.step import make_train_step

ROOT = Path(__file__).resolve().parents[1]


def measure(model_type: str, size: str, batch_size: int, seq_len: int, steps: int) -> dict:
    fam = models.family(model_type)
    on_cpu = jax.devices()[0].platform == "cpu"
    model = SpanModel(fam.sizes[size], dtype=jnp.float32 if on_cpu else jnp.bfloat16)
    mesh = sharding.make_mesh(sharding.parse_mesh(None, jax.device_count()))
    tx = optim.build("lamb", optim.schedule(1e-3, 10, 1000), 0.01)
    params = nn.meta.unbox(models.init_params(model, jax.random.key(0)))
    state = TrainState.create(params, tx)
    rng = np.random.default_rng(0)
    batch: dict = {
        "input_ids": rng.integers(1000, 2000, (1, batch_size, seq_len)).astype(np.int32),
        "attention_mask": np.ones((1, batch_size, seq_len), np.int32),
        "token_type_ids": np.zeros((1, batch_size, seq_len), np.int32),
        "start_positions": rng.integers(0, seq_len, (1, batch_size)).astype(np.int32),
        "end_positions": rng.integers(0, seq_len, (1, batch_size)).astype(np.int32),
    }
    batch = sharding.global_batch(batch, mesh, leading=1)
    step = jax.jit(make_train_step(model, tx, seed=0), donate_argnums=0)
    started = time.perf_counter()
    compiled = step.lower(state, batch, {}).compile()
    compile_seconds = time.perf_counter() - started
    state, metrics = compiled(state, batch, {})  # warm-up
    jax.block_until_ready(metrics)
    started = time.perf_counter()
    for _ in range(steps):
        state, metrics = compiled(state, batch, {})
    jax.block_until_ready(metrics)
    seconds = (time.perf_counter() - started) / steps
    return {
        "model": model_type,
        "size": size,
        "compile_seconds": round(compile_seconds, 1),
        "steps_per_s": round(1 / seconds, 3),
        "seq_per_s": round(batch_size / seconds, 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=384)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--sizes", default="tiny,base")
    args = p.parse_args()
    rows = []
    for model_type in models.MODEL_TYPES:
        for size in args.sizes.split(","):
            rows.append(measure(model_type, size, args.batch_size, args.seq_len, args.steps))
            print(json.dumps(rows[-1]), flush=True)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    result = {
        "command": " ".join(["python", *sys.argv]),
        "commit": commit,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "timed_steps": args.steps,
        "device": f"{jax.device_count()} x {jax.devices()[0].device_kind} ({platform.processor() or platform.machine()})",
        "rows": rows,
    }
    out = ROOT / "benchmarks" / "results" / f"train_speed_{jax.devices()[0].platform}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
