"""Where jaxqa's train step spends its device time: milliseconds per step and the
kernels that take the most time over a few steps (recorded by CUPTI through
`torch.profiler`, which sees every kernel of the process, XLA's included).

    python benchmarks/gpu/step_profile.py [--models minilm:32,bert:64] [--minilm DIR]

Each model is NAME:BATCH; `minilm` is the config of the real MiniLM folder
(`--minilm`, default .devdata/minilm), the other names are families at their
`base` size. Batches are SQuAD-like: random lengths from 100 to 384 tokens,
a 20-token question as token type 0, the rest as type 1, padding after. The
train step is the one `gpu/throughput.py` times (lib/gpu_recipe.py: AdamW, bfloat16 compute, dropout).
Prints a table per model; results go to benchmarks/results/step_profile_<platform>.json.
"""

import argparse
import sys
import time
from pathlib import Path

from jaxqa import checkpoint, models
from jaxqa.models.encoder import SpanModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for lib
from lib import inputs, paths, records, train_steps
from lib.gpu_recipe import jaxqa_model, jaxqa_train_step


def profile(module, batch: dict, steps: int, top: int) -> dict:
    import jax
    import torch
    from torch.profiler import ProfilerActivity

    tx, step = jaxqa_train_step(module)
    state = train_steps.train_state(module, tx)
    batch = jax.device_put(batch)
    started = time.perf_counter()
    step = step.lower(state, batch, {}).compile()
    compile_seconds = time.perf_counter() - started
    for _ in range(3):
        state, metrics = step(state, batch, {})
    jax.block_until_ready(metrics)
    started = time.perf_counter()
    for _ in range(steps):
        state, metrics = step(state, batch, {})
    jax.block_until_ready(metrics)
    step_ms = 1e3 * (time.perf_counter() - started) / steps
    kernels = []
    if torch.cuda.is_available():  # elsewhere only the step time
        with torch.profiler.profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                state, metrics = step(state, batch, {})
            jax.block_until_ready(metrics)
        kernels = sorted(
            ((e.key, e.device_time_total / 5e3, e.count // 5) for e in prof.key_averages()), key=lambda k: -k[1]
        )
    total = sum(ms for _, ms, _ in kernels)
    return {
        "compile_s": round(compile_seconds, 1),
        "step_ms": round(step_ms, 2),
        "kernel_ms_per_step": round(total, 2),
        "top_kernels": [
            {
                "kernel": name[:120],
                "ms_per_step": round(ms, 3),
                "calls_per_step": count,
                "share": round(ms / total, 3) if total else None,
            }
            for name, ms, count in kernels[:top]
        ],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="minilm:32,bert:64")
    p.add_argument("--minilm", type=Path, default=paths.DEVDATA / "minilm")
    p.add_argument("--seq-len", type=int, default=384)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--top", type=int, default=15)
    args = p.parse_args()
    rows = []
    for item in args.models.split(","):
        name, batch_size = item.split(":")
        if name == "minilm":
            source = checkpoint.open_checkpoint(args.minilm)
            import jax.numpy as jnp

            module = SpanModel(source.config, dtype=jnp.bfloat16, param_dtype=jnp.float32)
            vocab = source.config.vocab_size
        else:
            module = jaxqa_model(name, "base")
            vocab = models.family(name).sizes["base"].vocab_size
        batch = inputs.random_batch(int(batch_size), args.seq_len, (1000, vocab), shortest=100)  # (1, B, ...)
        found = profile(module, batch, args.steps, args.top)
        print(
            f"{name} batch {batch_size}: compile {found['compile_s']} s, {found['step_ms']} ms/step, "
            f"kernels {found['kernel_ms_per_step']} ms/step",
            flush=True,
        )
        kernels = found.pop("top_kernels")
        for kernel in kernels:
            print(
                f"  {kernel['ms_per_step']:8.3f} ms  {kernel['share']:6.1%}  x{kernel['calls_per_step']:<4} {kernel['kernel']}"
            )
            rows.append({"model": name, "batch": int(batch_size), **found, **kernel})
        if not kernels:
            rows.append({"model": name, "batch": int(batch_size), **found})
        records.write(
            {"seq_len": args.seq_len, "timed_steps": args.steps, "batches": "SQuAD-like, lengths 100-384, padded"},
            rows,
        )


if __name__ == "__main__":
    main()
