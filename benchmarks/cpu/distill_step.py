"""The teacher's share of a distillation step: the same student's train step
with and without a frozen teacher in it, timed in turns in one process.

    python benchmarks/cpu/distill_step.py [--pairs minilm,base] [--batch-size 8] [--seq-len 384] [--rounds 3]

Pairs: `minilm`, a 3-layer MiniLM-sized BERT student of the 6-layer MiniLM;
`base`, DistilBERT-base of BERT-base (the published DistilBERT recipe). Random
weights and token ids (speed does not depend on them); LAMB, float32 on CPUs and
bfloat16 compute on accelerators, as `jaxqa.train` does. Results go to
benchmarks/results/distill_step_<platform>.json.
"""

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

import jax

from jaxqa.models import bert, distilbert
from jaxqa.models.encoder import SpanModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for lib
from lib import inputs, records, timing, train_steps

MINILM = bert.SIZES["minilm-l6"]
PAIRS: dict[str, tuple[str, Any, str, Any]] = {  # (student family, student config, teacher family, teacher config)
    "minilm": ("bert", dataclasses.replace(MINILM, num_hidden_layers=3), "bert", MINILM),
    "base": ("distilbert", distilbert.SIZES["base"], "bert", bert.SIZES["base"]),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", default="minilm")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=384)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    dtype = train_steps.compute_dtype()
    batch = jax.device_put(inputs.random_batch(args.batch_size, args.seq_len))
    rows = []
    for pair in args.pairs.split(","):
        student_type, student_config, teacher_type, teacher_config = PAIRS[pair]
        student = SpanModel(student_config, dtype=dtype)
        teacher = SpanModel(teacher_config, dtype=dtype)
        runners = {
            "plain": train_steps.stepper(student, None, batch),
            "distilled": train_steps.stepper(student, teacher, batch),
        }
        seconds = timing.median_in_turns(runners, args.rounds)
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
    records.write(vars(args), rows)


if __name__ == "__main__":
    main()
