"""Evaluates a jaxqa checkpoint on SQuAD with the official metric.

    python -m jaxqa.evaluate --checkpoint DIR --data dev-v2.0.json [--out-dir OUT]

`--data` is any source `jaxqa.squad.sources` reads (the official JSON, flat
files, a hub dataset); predictions are keyed by the data's ids.

Writes `predictions.json` (and, for SQuAD 2.0, `null_odds.json`) in the official
formats to OUT (by default `eval/<the data's name>` in the current folder)
and prints the metrics. Logits become answers batch by batch, so the whole
set's logits are never held at once.

A run's model (RUN/model or RUN/best, beside RUN/run.json) is cut into the
windows it was trained and evaluated on: the window flags not given take the
run's values, so that evaluate reproduces the run's score.

On SQuAD 2.0 a model that answers nothing scores the share of questions
without an answer, so the line that sums the scores up (`describe`) names the
F1 on the questions with answers and on those without, as the official script's
HasAns_f1 and NoAns_f1; and scoring warns when every answer is empty.
"""

import argparse
import json
import logging
import math
import sys
import tempfile
import time
from pathlib import Path

import jax
from tqdm import tqdm

from jaxqa import compilation_cache, models, precision, sharding
from jaxqa.checkpoint import open_checkpoint
from jaxqa.engine import Compiled, Engine, Runtime
from jaxqa.errors import Error, log_to, write_file
from jaxqa.pretrained import Exported, Pretrained, open_model
from jaxqa.squad import buckets, metric, sources
from jaxqa.squad.decode import AnswerCollector, Predictions
from jaxqa.squad.features import EvalFeatures, FeatureSettings, eval_features

log = logging.getLogger("jaxqa.evaluate")

# Evaluation sorts windows by length within chunks of this many batches: every
# chunk but the last is whole batches, and a chunk's logits are all that is held.
CHUNK_BATCHES = 16


def engine(runtime: Runtime, max_seq_length: int, batch_size: int, length_step: int = buckets.LENGTH_STEP) -> Engine:
    """How evaluation runs windows of up to `max_seq_length` tokens: sorted by
    length, in batches of `batch_size` (the last padded with empty rows), each
    padded to the shortest of `buckets.widths(max_seq_length, length_step)`
    that holds its longest window, so that one program per width serves all."""
    return Engine(runtime, buckets.widths(max_seq_length, length_step), (batch_size,))


def answer(
    engine: Engine,
    examples,
    features: EvalFeatures,
    with_negatives: bool,
    null_score_diff_threshold: float,
    show_progress: bool = False,
    keep_nbest: bool = False,
) -> Predictions:
    """The answers to `examples`, their windows' logits taken from `engine` a
    chunk at a time, so that the whole set's logits are never held at once."""
    collector = AnswerCollector(
        examples,
        features,
        version_2_with_negative=with_negatives,
        null_score_diff_threshold=null_score_diff_threshold,
        keep_nbest=keep_nbest,
    )
    chunk = engine.batch_sizes[-1] * CHUNK_BATCHES
    windows = features.input_ids, features.attention_mask, features.token_type_ids
    total = len(features.input_ids)
    with tqdm(total=total, unit="feature", disable=not show_progress, dynamic_ncols=True) as progress:
        for start, end in engine.stream(*windows, chunk=chunk):
            collector.add(start, end)
            progress.update(len(start))
    return collector.finish()


def score(articles, predictions: Predictions, with_negatives: bool) -> dict:
    """The official metric of the answers as they are; for SQuAD 2.0 with the null
    odds as no-answer probabilities, for the threshold search. Warns when every
    answer is empty."""
    answers = predictions.answers
    if answers and not any(answers.values()):
        log.warning(
            f"every one of the {len(answers)} answers is empty (no answer): the scores are those of answering nothing"
        )
    # The answers already hold "" where the null odds exceed the threshold applied;
    # the metric's own default (1.0, for probabilities) would turn more into "".
    return metric.compute(
        articles,
        predictions.answers,
        na_probs=predictions.null_odds if with_negatives else None,
        na_prob_thresh=math.inf,
    )


def apply_best_threshold(articles, predictions: Predictions) -> tuple[Predictions, float]:
    """The predictions with "" wherever the null odds exceed the threshold that
    maximises their F1 on `articles`, and that threshold: scored again, they
    reach the best_f1 that `score` reports for `predictions`."""
    threshold = metric.best_f1_threshold(articles, predictions.answers, predictions.null_odds)
    answers = {qid: "" if predictions.null_odds[qid] > threshold else text for qid, text in predictions.answers.items()}
    return Predictions(answers, predictions.null_odds, {}), threshold


def describe(result: dict) -> str:
    """The scores of the official metric's `result` in a line: exact and F1, and
    on SQuAD 2.0 the F1 on the questions with answers and on those without."""
    line = f"exact {result['exact']:.2f} f1 {result['f1']:.2f}"
    if "NoAns_f1" in result:
        line += f" HasAns_f1 {result.get('HasAns_f1', math.nan):.2f} NoAns_f1 {result['NoAns_f1']:.2f}"
    return line


def evaluate_params(
    model,
    params,
    eval_set,
    mesh,
    batch_size: int,
    null_score_diff_threshold: float,
    length_step: int = buckets.LENGTH_STEP,
) -> dict:
    """The official metrics of `params` on a `jaxqa.training.batches.EvalSet` (used during training)."""
    started = time.perf_counter()
    runs = engine(Compiled(model, params, mesh), eval_set.features.input_ids.shape[1], batch_size, length_step)
    predictions = answer(
        runs, eval_set.data.examples, eval_set.features, eval_set.with_negatives, null_score_diff_threshold
    )
    result = dict(score(eval_set.data.articles, predictions, eval_set.with_negatives))
    result["eval_seconds"] = round(time.perf_counter() - started, 1)
    log.info(f"eval: {describe(result)} ({result['total']} questions, {result['eval_seconds']}s)")
    return result


# The window flags, by their settings' flat names (`jaxqa.training.settings`), with their defaults.
WINDOW_DEFAULTS = {"max_seq_length": 384, "doc_stride": 128, "max_query_length": 64}


def run_windows(checkpoint: str) -> dict[str, int]:
    """The window settings of the run that wrote `checkpoint` (RUN/model or
    RUN/best), by flat name, from RUN/run.json (`jaxqa.training.run_folder`);
    {} for any other checkpoint, or a record that holds none."""
    record = Path(checkpoint).parent / "run.json"
    try:
        settings = json.loads(record.read_text())["settings"]
        return {name: settings[name] for name in WINDOW_DEFAULTS if isinstance(settings.get(name), int)}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def windows(args: argparse.Namespace) -> FeatureSettings:
    """The windows to cut: each window flag as given, else the run's (logged), else its default."""
    given = {name: getattr(args, name) for name in WINDOW_DEFAULTS if getattr(args, name) is not None}
    run = {name: value for name, value in run_windows(args.checkpoint).items() if name not in given}
    if run:
        said = ", ".join(f"--{name.replace('_', '-')} {value}" for name, value in run.items())
        log.info(f"the run's windows, from {Path(args.checkpoint).parent / 'run.json'}: {said}")
    return FeatureSettings(**(WINDOW_DEFAULTS | run | given))


def main(argv=None, prog: str = "python -m jaxqa.evaluate") -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="jaxqa checkpoint folder (or a Hugging Face folder)")
    p.add_argument(
        "--data",
        required=True,
        help="official SQuAD 1.1 or 2.0 JSON, a flat .jsonl/.json/.csv/.parquet file, "
        "or a hub dataset NAME[:CONFIG][@SPLIT] (default split: validation)",
    )
    sources.add_flags(p)
    p.add_argument(
        "--out-dir",
        help="where predictions.json and null_odds.json go (default: eval/<the --data file's name>)",
    )
    p.add_argument("--max-eval-examples", type=int, default=0, help="questions taken from the start of --data; 0: all")
    p.add_argument("--batch-size", type=int, default=64)
    run_default = "(default: the run's, for a run's model; else {})"
    p.add_argument("--max-seq-length", "--max-seq-len", type=int, help=run_default.format(384))
    p.add_argument("--doc-stride", type=int, help=run_default.format(128))
    p.add_argument("--max-query-length", type=int, help=run_default.format(64))
    p.add_argument(
        "--length-step",
        type=int,
        default=buckets.LENGTH_STEP,
        help="windows run sorted by length, padded to multiples of this many tokens; 0: all padded to --max-seq-length",
    )
    p.add_argument(
        "--null-score-diff-threshold",
        default="0.0",
        help="SQuAD 2.0: answer '' when null odds exceed it; 'best' applies the threshold tuned on --data",
    )
    precision.add_flag(p)
    p.add_argument("--compilation-cache", default="", help=compilation_cache.HELP)
    args = p.parse_args(argv)
    with log_to(sys.stderr):
        try:
            settings = windows(args)
            threshold = checked(args, settings)
        except Error as err:
            print(f"jaxqa.evaluate: error: {err}", file=sys.stderr)
            return 2
        return run(args, settings, threshold)


def checked(args: argparse.Namespace, settings: FeatureSettings) -> float | None:
    """The --null-score-diff-threshold (None: "best"), after the checks `jaxqa.train`
    makes of the same settings, each naming its flag."""
    settings.check(lambda name: f"--{name.replace('_', '-')}")
    if args.max_eval_examples < 0:
        raise Error(f"--max-eval-examples {args.max_eval_examples}: 0 (all) or a number of questions")
    if args.batch_size < 1:
        raise Error(f"--batch-size {args.batch_size}: must be at least 1")
    if args.length_step < 0:
        raise Error(f"--length-step {args.length_step}: 0 or a positive number of tokens")
    if args.null_score_diff_threshold == "best":
        return None
    try:
        threshold = float(args.null_score_diff_threshold)
    except ValueError:
        raise Error(f"--null-score-diff-threshold {args.null_score_diff_threshold!r}: a number or 'best'") from None
    if not math.isfinite(threshold):
        raise Error(f"--null-score-diff-threshold {threshold}: must be finite")
    return threshold


def out_folder(path: str | None, data: str) -> Path:
    """The --out-dir folder (by default eval/<the data's name>), made if need be
    and found writable (a file is made there and removed), so that a read-only
    or full disk is said before the evaluation, not after it."""
    if path == "":
        raise Error("--out-dir '': name a folder ('.' for this one)")
    path = path or str(Path("eval") / Path(data).stem)
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise Error(f"--out-dir {path}: is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise Error(f"--out-dir {path}: cannot make the folder ({err.strerror})") from None
    try:
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise Error(f"--out-dir {path}: cannot write in the folder ({err.strerror})") from None
    return out


def run(args: argparse.Namespace, settings: FeatureSettings, threshold: float | None) -> int:
    """Evaluates as the command line asks, on windows of `settings`; `threshold` None means "best"."""
    try:
        # Made first, so that an unusable --out-dir is not found after the whole evaluation.
        out = out_folder(args.out_dir, args.data)
        source = open_checkpoint(args.checkpoint)
        models.check_length(source.config, settings.max_seq_length, "--max-seq-length")
        data = sources.read(args.data, "validation", sources.columns_of(args), args.skip_bad_rows)
        data = data.head(args.max_eval_examples)
        model = open_model(source, args.precision)
        if isinstance(model, Exported):
            model.check_length(settings.max_seq_length, "--max-seq-length")
        features = eval_features(data, model.tokenizer, settings)
    except (Error, OSError) as err:
        print(f"jaxqa.evaluate: error: {err}", file=sys.stderr)
        return 2
    compilation_cache.enable(args.compilation_cache)
    mesh = sharding.make_mesh(sharding.parse_mesh(None, jax.device_count()))
    batch_size = -(-args.batch_size // jax.device_count()) * jax.device_count()
    with_negatives = any(example.is_impossible for example in data.examples)
    started = time.perf_counter()
    tune = threshold is None and with_negatives
    # On one device the model's own runtime serves; a mesh of several takes its weights anew, laid out on it.
    runtime: Runtime = model.runtime
    if isinstance(model, Pretrained) and mesh.size > 1:
        runtime = Compiled(model.module, model.params, mesh)
    runs = engine(runtime, settings.max_seq_length, batch_size, args.length_step)
    predictions = answer(runs, data.examples, features, with_negatives, threshold or 0.0, show_progress=True)
    seconds = time.perf_counter() - started
    if tune:
        predictions, threshold = apply_best_threshold(data.articles, predictions)
    result = score(data.articles, predictions, with_negatives)
    try:
        write_file(out / "predictions.json", json.dumps(predictions.answers, indent=2, ensure_ascii=False))
        if with_negatives:
            write_file(out / "null_odds.json", json.dumps(predictions.null_odds, indent=2))
    except Error as err:
        print(f"jaxqa.evaluate: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    log.info(
        f"{describe(result)}; {len(features.input_ids)} features of {len(data.examples)} questions in {seconds:.1f}s: "
        f"{len(features.input_ids) / seconds:.1f} features/s on {jax.device_count()} {jax.devices()[0].platform} "
        f"device(s) in {model.precision}" + (f"; null_score_diff_threshold {threshold}" if with_negatives else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
