"""Timing: runners called in turns, so that a busy or drifting machine slows
them alike; medians and percentiles; the device's matrix-product rate."""

import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def in_turns(
    runners: dict[str, Callable[[], Any]], rounds: int, reverse_odd_rounds: bool = False, progress: str | None = None
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Every runner called once a round, one after another (in reverse order
    every other round where asked), so that a busy or drifting machine slows
    them alike: the seconds of each call, and each runner's last result, by
    name. With `progress`, prints each call's time after it, `progress` first."""
    seconds: dict[str, list[float]] = {name: [] for name in runners}
    results = {}
    for round_number in range(rounds):
        for name in list(runners)[:: -1 if reverse_odd_rounds and round_number % 2 else 1]:
            started = time.perf_counter()
            results[name] = runners[name]()
            seconds[name].append(time.perf_counter() - started)
            if progress is not None:
                print(f"{progress}round {round_number + 1}: {name}: {seconds[name][-1]:.2f}s", flush=True)
    return seconds, results


def median_in_turns(runners: dict[str, Callable[[], Any]], rounds: int) -> dict[str, float]:
    """{name: median seconds of a call}, the runners taking turns."""
    seconds, _ = in_turns(runners, rounds)
    return {name: statistics.median(values) for name, values in seconds.items()}


def summary(seconds) -> dict:
    """Median and 90th percentile of timings, in milliseconds."""
    seconds = np.asarray(seconds, float)
    return {
        "median_ms": round(1e3 * float(np.median(seconds)), 2),
        "p90_ms": round(1e3 * float(np.percentile(seconds, 90)), 2),
        "n": int(seconds.size),
    }


def matmul_flops_per_s(n: int, dtype=jnp.bfloat16) -> float:
    """The device's matmul rate in `dtype`: an (n, n) @ (n, n) product, repeated for
    at least a second after warm-up."""
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), dtype)
    matmul = jax.jit(jnp.matmul)
    for _ in range(3):
        jax.block_until_ready(matmul(a, b))
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < 1.0:
        for _ in range(10):
            product = matmul(a, b)
        jax.block_until_ready(product)
        count += 10
    return 2 * n**3 * count / (time.perf_counter() - started)
