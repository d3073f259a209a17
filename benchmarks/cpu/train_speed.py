"""Train-step speed of each model's tiny and base configs on this machine: the
compile time of the sharded train step and steady-state steps per second.

    python benchmarks/cpu/train_speed.py [--batch-size 8] [--seq-len 384] [--steps 5]

Random weights and random token ids (speed does not depend on them); LAMB,
float32 on CPUs and bfloat16 compute on accelerators, as `jaxqa.train` does.
Results go to benchmarks/results/train_speed_<platform>.json.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import jax

from jaxqa import models, sharding
from jaxqa.models.encoder import SpanModel
from jaxqa.training.step import make_train_step

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for lib
from lib import inputs, records, train_steps


def measure(model_type: str, size: str, batch_size: int, seq_len: int, steps: int) -> dict:
    model = SpanModel(models.family(model_type).sizes[size], dtype=train_steps.compute_dtype())
    tx = train_steps.lamb()
    state = train_steps.train_state(model, tx)
    batch = sharding.global_batch(inputs.random_batch(batch_size, seq_len), train_steps.device_mesh(), leading=1)
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
    settings = {"batch_size": args.batch_size, "seq_len": args.seq_len, "timed_steps": args.steps, "sizes": args.sizes}
    records.write(settings, rows)


if __name__ == "__main__":
    main()
