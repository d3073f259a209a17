"""What pruning adds to a train step: the same BERT's step unpruned and pruned by
each method, its batch split into micro-batches, timed in turns in one process.

    python benchmarks/cpu/prune_step.py [--size base] [--methods movement,hybrid] [--batch-size 8] [--seq-len 128]
                                    [--grad-accum 4] [--rounds 3]

Random weights and token ids (speed does not depend on them); LAMB, float32 on
CPUs and bfloat16 compute on accelerators, as `jaxqa.train` does; pruning to
half the encoder's Linear weights. Results go to
benchmarks/results/prune_step_<platform>.json.
"""

import argparse
import sys
from pathlib import Path

import jax

from jaxqa.models import bert
from jaxqa.models.encoder import SpanModel
from jaxqa.training import pruning

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for lib
from lib import inputs, records, timing, train_steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="base", choices=sorted(bert.SIZES))
    p.add_argument("--methods", default="movement,hybrid")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--grad-accum", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    config = bert.SIZES[args.size]
    model = SpanModel(config, dtype=train_steps.compute_dtype())
    batch = jax.device_put(inputs.random_batch(args.batch_size, args.seq_len, micro_batches=args.grad_accum))
    block = pruning.block_edge(32, config.head_dim, config.hidden_size)
    runners = {"none": train_steps.stepper(model, None, batch)}
    for method in args.methods.split(","):
        prune = pruning.Pruning(method, 0.5, 1000, 10, 1.0, 2.0, 400.0, block)
        runners[method] = train_steps.stepper(model, None, batch, prune)
    seconds = timing.median_in_turns(runners, args.rounds)
    rows = [
        {
            "model": f"bert {args.size}",
            "pruning": name,
            "step_s": round(value, 3),
            "added_s": round(value - seconds["none"], 3),
            "ratio": round(value / seconds["none"], 3),
        }
        for name, value in seconds.items()
    ]
    records.write(vars(args), rows)


if __name__ == "__main__":
    main()
