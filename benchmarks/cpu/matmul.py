"""The rate of XLA's matrix products on this CPU in each precision: what decides
which precision `auto` should pick (jaxqa.precision).

    python benchmarks/cpu/matmul.py [--flags "" "--xla_cpu_use_xnnpack=true" ...]

For each XLA_FLAGS setting (each in a fresh process, since XLA reads them once)
and each of BERT-base's product shapes at 160 tokens: float32; bfloat16
operands with a float32 result (jaxqa's bf16 mode); bfloat16 with a bfloat16
result; int8 with an int32 result (jaxqa's int8 mode, without its quantizing).
Median of 30 runs, in GFLOP/s (GOP/s for int8).
Results: benchmarks/results/matmul_cpu.json.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for lib
from lib import records

SHAPES = ((160, 768, 768), (160, 768, 3072), (160, 3072, 768))
FLAGS = (
    "",
    "--xla_cpu_use_xnnpack=true",
    "--xla_cpu_use_onednn=true",
    "--xla_cpu_experimental_xnn_fusion_type=dot",
    "--xla_cpu_experimental_ynn_fusion_type=dot",
    "--xla_cpu_experimental_onednn_fusion_type=dot",
)

MEASURE = """
import json, time
import jax, jax.numpy as jnp, numpy as np
rows = []
rng = np.random.default_rng(0)
for m, k, n in SHAPES:
    for name, dtype, result in (("fp32", jnp.float32, jnp.float32), ("bf16_to_fp32", jnp.bfloat16, jnp.float32),
                                ("bf16_to_bf16", jnp.bfloat16, jnp.bfloat16), ("int8_to_int32", jnp.int8, jnp.int32)):
        a = jnp.asarray(rng.integers(-127, 128, (m, k)), dtype)
        b = jnp.asarray(rng.integers(-127, 128, (k, n)), dtype)
        dot = jax.jit(lambda a, b: jax.lax.dot_general(a, b, (((1,), (0,)), ((), ())), preferred_element_type=result))
        dot(a, b).block_until_ready()
        seconds = []
        for _ in range(30):
            begun = time.perf_counter()
            dot(a, b).block_until_ready()
            seconds.append(time.perf_counter() - begun)
        rows.append({"shape": f"{m}x{k}x{n}", "product": name, "g_per_s": round(2 * m * k * n / np.median(seconds) / 1e9, 1)})
print(json.dumps(rows))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--flags", nargs="*", default=list(FLAGS))
    args = p.parse_args()
    rows = []
    for flags in args.flags:
        code = MEASURE.replace("SHAPES", repr(SHAPES))
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "XLA_FLAGS": flags},
        )
        for row in json.loads(done.stdout.splitlines()[-1]):
            rows.append({"xla_flags": flags or "(none)", **row})
            print(json.dumps(rows[-1]), flush=True)
    records.write({"shapes": [list(shape) for shape in SHAPES]}, rows)


if __name__ == "__main__":
    main()
