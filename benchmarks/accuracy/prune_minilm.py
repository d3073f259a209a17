"""Real weights, real data, on a CPU: the fine-tuned MiniLM (a 6-layer BERT)
pruned to about half of its encoder weights with hybrid (block) movement
pruning, distilling from itself unpruned, into a compact model.

1. Prunes `--teacher` (by default the quick start's fine-tuned MiniLM) with
   `jaxqa.train --init T --teacher T --prune hybrid --prune-remaining R` on the
   first questions of SQuAD 1.1 train. Without `--teacher`'s folder, the real
   MiniLM is fine-tuned first, as the quick start does.
2. Scores the dense and the compact model on the same first dev-v1.1
   questions, with the evaluation that training runs.
3. Times both one question at a time (jaxqa's pipeline in float32, each in a
   process of its own, taking the questions in turns; `lib/sides.py`).
With `--control`, the dense model is also trained as long with the same
distillation but no pruning, and scored: what the extra training alone gives.
`--keep-pruned` takes the pruned model a previous run left in --run-dir
instead of pruning again (its row then reports that run's training figures).
Results: benchmarks/results/prune_minilm_<platform>.json, and pruning.json in the run folder.

    python benchmarks/accuracy/prune_minilm.py [--train-examples 1500] [--epochs 2] [--remaining 0.5] [--control] [--keep-pruned]
"""

import argparse
import json
import sys
from pathlib import Path

from jaxqa import checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for lib
from lib import fine_tuning, inputs, paths, records, sides


def scores(folder: Path, args) -> dict:
    """EM/F1 of a checkpoint on the first --eval-examples dev questions, as training evaluates."""
    result = fine_tuning.dev_scores(
        folder, args.squad_dir, args.eval_examples, args.max_seq_length, args.doc_stride, 64
    )
    return {"exact": round(result["exact"], 2), "f1": round(result["f1"], 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher", type=Path, default=paths.ROOT / "runs" / "minilm-cpu" / "train" / "model")
    p.add_argument("--method", default="hybrid")
    p.add_argument("--remaining", type=float, default=0.5)
    fine_tuning.add_fine_tuning_flags(p, train_examples=1500, eval_examples=500, epochs=2.0, run_dir="prune-minilm")
    p.add_argument("--questions", type=int, default=40, help="asked one at a time of each model")
    p.add_argument("--control", action="store_true", help="also train the dense model as long, without pruning")
    p.add_argument("--keep-pruned", action="store_true", help="reuse the pruned model a previous run made")
    args = p.parse_args()

    if not (args.teacher / checkpoint.PARAMS_FILE).is_file():  # the quick start's fine-tuning
        init = fine_tuning.minilm_checkpoint(args.run_dir / "minilm", reuse=False)
        teacher_flags = fine_tuning.train_flags(
            init,
            args.squad_dir,
            800,
            args.eval_examples,
            16,
            1.0,
            learning_rate=args.learning_rate,
            seed=0,
            max_seq_length=args.max_seq_length,
            doc_stride=args.doc_stride,
        )
        fine_tuning.fresh_run(args.run_dir / "teacher", teacher_flags)
        args.teacher = args.run_dir / "teacher" / "model"
    pruned, control = args.run_dir / "pruned", args.run_dir / "control"
    distilled = [*fine_tuning.fine_tuning_flags(args.teacher, args, 16, 0), "--teacher", str(args.teacher)]
    if not (args.keep_pruned and (pruned / "pruning.json").is_file()):
        fine_tuning.fresh_run(pruned, [*distilled, "--prune", args.method, "--prune-remaining", str(args.remaining)])
    summary = fine_tuning.run_summary(pruned)
    report = json.loads((pruned / "pruning.json").read_text())

    questions = inputs.squad_questions(args.squad_dir / "dev-v1.1.json", args.questions)
    timings = sides.warm_latency(
        {"jaxqa-dense": ("jaxqa-fp32", args.teacher), "jaxqa-compact": ("jaxqa-fp32", pruned / "model")},
        questions,
        5,
        None,
    )
    latency = {row["side"]: row for row in timings}
    rows = []
    for name, folder, shape in (
        ("dense", args.teacher, report["before"]),
        ("compact", pruned / "model", report["after"]),
    ):
        rows.append(
            {
                "model": name,
                **scores(folder, args),
                "heads": sum(shape["heads"]),
                "feed_forward_units": sum(shape["feed_forward_units"]),
                "parameters": shape["parameters"],
                "gflops_per_sequence": round(shape["flops_per_sequence"] / 1e9, 3),
                "median_ms": latency[f"jaxqa-{name}"]["median_ms"],
                "p90_ms": latency[f"jaxqa-{name}"]["p90_ms"],
            }
        )
    dense, small = rows
    if args.control:
        fine_tuning.fresh_run(control, distilled)
        rows.append({"model": "dense, distilled as long without pruning", **scores(control / "model", args)})
    small["speed_up"] = round(dense["median_ms"] / small["median_ms"], 3)
    small["flop_ratio"] = round(dense["gflops_per_sequence"] / small["gflops_per_sequence"], 3)
    small["remaining"] = report["remaining"]
    small["pruning_steps"], small["pruning_wall_seconds"] = summary["steps"], summary["wall_seconds"]
    records.write(
        {
            **vars(args),
            "heads_after": report["after"]["heads"],
            "feed_forward_units_after": report["after"]["feed_forward_units"],
        },
        rows,
    )


if __name__ == "__main__":
    main()
