"""The teacher's share of a distillation step: the same student's train step
with and without a frozen teacher in it, timed in turns in one process.

    python benchmarks/distill_step.py [--pairs minilm,base] [--batch-size 8] [--seq-len 384] [--rounds 3]

Pairs: `minilm`, a 3-layer MiniLM-sized BERT student of the 6-layer MiniLM;
`base`, DistilBERT-base of BERT-base (the published DistilBERT recipe). Random
weights and token ids (speed does not depend on them); LAMB, float32 on CPUs and
bfloat16 compute on accelerators, as `jaxqa.train` does. Results go to
benchmarks/results/distill_step_<platform>.json.
"""

import argparse
import dataclasses
import statistics
from typing import Any

import common
import flax.linen as nn
import jax

from jaxqa.models import bert, distilbert
from jaxqa.models.encoder import SpanModel
from jaxqa.training import optim
from jaxqa.training.pruning import Pruning
from jaxqa.training.step import Distillation, make_train_step

MINILM = bert.SIZES["minilm-l6"]
PAIRS: dict[str, tuple[str, Any, str, Any]] = {  # (student family, student config, teacher family, teacher config)
    "minilm": ("bert", dataclasses.replace(MINILM, num_hidden_layers=3), "bert", MINILM),
    "base": ("distilbert", distilbert.SIZES["base"], "bert", bert.SIZES["base"]),
}


def stepper(student: nn.Module, teacher: nn.Module | None, batch: dict, prune: Pruning | None = None):
    """A function that runs one compiled train step (distilled from `teacher`,
    pruned by `prune`, where given) and waits for it."""
    tx, score_tx = common.lamb(), optim.scores(common.lamb_schedule())
    state = common.train_state(student, tx, prune, score_tx)
    distill = teacher_params = None
    if teacher is not None:
        distill = Distillation(teacher, 0.5, 2.0)
        teacher_params = common.random_params(teacher, seed=1)
    step = jax.jit(
        make_train_step(student, tx, seed=0, distill=distill, prune=prune, score_tx=score_tx), donate_argnums=0
    )
    compiled = step.lower(state, batch, teacher_params or {}).compile()
    holder = {"state": state}

    def run():
        holder["state"], metrics = compiled(holder["state"], batch, teacher_params or {})
        jax.block_until_ready(metrics)

    run()  # warm-up
    return run


def timed_in_turns(runners: dict, rounds: int) -> dict:
    """{name: median seconds of a step}, the runners taking turns."""
    seconds, _ = common.in_turns(runners, rounds)
    return {name: statistics.median(values) for name, values in seconds.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", default="minilm")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=384)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    dtype = common.compute_dtype()
    batch = jax.device_put(common.random_batch(args.batch_size, args.seq_len))
    rows = []
    for pair in args.pairs.split(","):
        student_type, student_config, teacher_type, teacher_config = PAIRS[pair]
        student = SpanModel(student_config, dtype=dtype)
        teacher = SpanModel(teacher_config, dtype=dtype)
        runners = {"plain": stepper(student, None, batch), "distilled": stepper(student, teacher, batch)}
        seconds = timed_in_turns(runners, args.rounds)
        plain, distilled = seconds["plain"], seconds["distilled"]
        rows.append(
            {
                "pair": pair,
                "student": f"{student_type} {student_config.num_hidden_layers} layers",
                "teacher": f"{teacher_type} {teacher_config.num_hidden_layers} layers",
                "plain_step_s": round(plain, 3),
                "distilled_step_s": round(distilled, 3),
                "teacher_share": round((distilled - plain) / distilled, 3),
            }
        )
    common.write("distill_step", vars(args), rows)


if __name__ == "__main__":
    main()
