"""The official SQuAD evaluation: exact match, F1 and the no-answer threshold search.

This reproduces the logic of the official SQuAD v2.0 script (evaluate-v2.0.py)
number for number, including its order of summation, so that every value it
prints is the same float. The v2.0 script also scores SQuAD 1.1 data, where every
question has answers and only the HasAns_* keys appear.

One case is defined here that the official script leaves undefined: a question
without a prediction. The script warns and skips it, then fails with a KeyError
when it builds the HasAns/NoAns subsets. Here the warning is printed (to stderr,
so that stdout stays JSON) and the question is left out of every number, as if it
were not in the dataset.

`python -m jaxqa.squad.metric DATA.json PREDICTIONS.json [--na-prob-file F]
[--na-prob-thresh X] [--out-file OUT.json]` is the official script's command
line over `compute`, and prints the same JSON; the data may also be flat rows
(`jaxqa.squad.sources`), whose default columns it reads.
"""

import argparse
import collections
import json
import math
import re
import string
import sys
from pathlib import Path

from jaxqa.errors import Error, write_file
from jaxqa.squad import sources

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(s: str) -> str:
    """Lower-cases and removes punctuation, the articles a/an/the and extra white space."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", s).split())


def compute_exact(gold: str, pred: str) -> int:
    return int(normalize_answer(gold) == normalize_answer(pred))


def compute_f1(gold: str, pred: str) -> float:
    """Token-level F1 between the normalised answers."""
    gold_tokens = normalize_answer(gold).split()
    pred_tokens = normalize_answer(pred).split()
    if not gold_tokens or not pred_tokens:
        # An empty side means "no answer": full credit only when both are empty.
        return float(gold_tokens == pred_tokens)
    num_same = sum((collections.Counter(gold_tokens) & collections.Counter(pred_tokens)).values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def check_dataset(dataset) -> None:
    """Raises ValueError, naming the article, paragraph and question, where `dataset`
    lacks what the metric reads: articles > "paragraphs" > "qas", each question
    with a string "id" and an "answers" list of objects with a string "text"."""
    if not isinstance(dataset, list):
        raise ValueError(f'"data" must be a list of articles, got {type(dataset).__name__}')
    for a, article in enumerate(dataset):
        if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
            raise ValueError(f'article {a}: no "paragraphs" list')
        for p, paragraph in enumerate(article["paragraphs"]):
            if not isinstance(paragraph, dict) or not isinstance(paragraph.get("qas"), list):
                raise ValueError(f'article {a}, paragraph {p}: no "qas" list')
            for q, qa in enumerate(paragraph["qas"]):
                where = f"article {a}, paragraph {p}, question {q}"
                if not isinstance(qa, dict) or not isinstance(qa.get("id"), str):
                    raise ValueError(f'{where}: no "id" string')
                answers = qa.get("answers")
                if not isinstance(answers, list):
                    raise ValueError(f'{where} (id {qa["id"]}): no "answers" list')
                if not all(isinstance(answer, dict) and isinstance(answer.get("text"), str) for answer in answers):
                    raise ValueError(f'{where} (id {qa["id"]}): an answer without a "text" string')


def _raw_scores(dataset: list[dict], predictions: dict[str, str]):
    """Per-question answerability, EM and F1 (max over gold answers), in dataset order."""
    has_answer, exact, f1 = {}, {}, {}
    for article in dataset:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                qid = qa["id"]
                if qid not in predictions:
                    print(f"Missing prediction for {qid}", file=sys.stderr)
                    continue
                # Answerability follows the raw list, but a gold text that normalises
                # to nothing (say "the") counts as "no answer" when scoring.
                has_answer[qid] = bool(qa["answers"])
                golds = [a["text"] for a in qa["answers"] if normalize_answer(a["text"])] or [""]
                pred = predictions[qid]
                exact[qid] = max(compute_exact(gold, pred) for gold in golds)
                f1[qid] = max(compute_f1(gold, pred) for gold in golds)
    return has_answer, exact, f1


def _apply_no_answer_threshold(scores, na_probs, has_answer, na_prob_thresh):
    """Scores after answering "no answer" wherever the no-answer probability exceeds the threshold."""
    return {
        qid: float(not has_answer[qid]) if na_probs[qid] > na_prob_thresh else score for qid, score in scores.items()
    }


def _summary(exact, f1, qids) -> dict:
    # 100.0 * sum / total in this order, as the official script computes it.
    return {
        "exact": 100.0 * sum(exact[qid] for qid in qids) / len(qids),
        "f1": 100.0 * sum(f1[qid] for qid in qids) / len(qids),
        "total": len(qids),
    }


def _best_threshold(predictions, scores, na_probs, has_answer):
    """The best total score over no-answer thresholds, in percent, the threshold
    reaching it, and whether any question is answered there.

    Below every probability all questions are answered "no answer", which scores one
    per unanswerable question. Raising the threshold past a question's probability
    switches it to its prediction: an answerable one gains its score, an unanswerable
    one loses its point if the prediction is non-empty. Equal probabilities are
    walked one question at a time in the order of `na_probs`, as the official script
    does, so the best score may fall inside a group of ties. Where "no answer" for
    every question is best, the official threshold is its starting value, 0.0.
    """
    score = sum(1 for answerable in has_answer.values() if not answerable)
    best_score, best_thresh, answers_some = score, 0.0, False
    for qid in sorted(na_probs, key=na_probs.get):
        if qid not in scores:
            continue
        if has_answer[qid]:
            score += scores[qid]
        elif predictions[qid]:
            score -= 1
        if score > best_score:
            best_score, best_thresh, answers_some = score, na_probs[qid], True
    return 100.0 * best_score / len(scores), best_thresh, answers_some


def best_thresholds(predictions, exact_raw, f1_raw, na_probs, has_answer) -> dict:
    """best_exact / best_f1 and their no-answer thresholds, from scores before any threshold."""
    best_exact, exact_thresh, _ = _best_threshold(predictions, exact_raw, na_probs, has_answer)
    best_f1, f1_thresh, _ = _best_threshold(predictions, f1_raw, na_probs, has_answer)
    return {
        "best_exact": best_exact,
        "best_exact_thresh": exact_thresh,
        "best_f1": best_f1,
        "best_f1_thresh": f1_thresh,
    }


def best_f1_threshold(dataset: list[dict], predictions: dict[str, str], na_probs: dict[str, float]) -> float:
    """A no-answer threshold that, applied to `predictions`, scores the best_f1 that `compute` reports.

    That is best_f1_thresh, except where answering nothing is best: the official
    search then reports 0.0, a placeholder that answers every question whose
    probability is 0.0 or below (null odds can all be negative), so -inf is
    returned instead. Where the best score falls inside a group of equal
    probabilities, no threshold reaches it exactly.
    """
    has_answer, _, f1_raw = _raw_scores(dataset, predictions)
    _, thresh, answers_some = _best_threshold(predictions, f1_raw, na_probs, has_answer)
    return thresh if answers_some else -math.inf


def compute(
    dataset: list[dict],
    predictions: dict[str, str],
    na_probs: dict[str, float] | None = None,
    na_prob_thresh: float = 1.0,
) -> dict:
    """The official SQuAD v2.0 metrics, with the keys in the official order.

    `dataset` is the "data" list of a SQuAD JSON file, `predictions` maps question
    ids to answer texts ("" for no answer), `na_probs` maps them to no-answer
    probabilities. Questions count as "no answer" where that probability exceeds
    `na_prob_thresh`; given `na_probs`, the best thresholds are searched as well.
    """
    has_answer, exact_raw, f1_raw = _raw_scores(dataset, predictions)
    if not exact_raw:
        raise ValueError("no question in the dataset has a prediction")
    probs = dict.fromkeys(predictions, 0.0) if na_probs is None else na_probs
    unknown = [qid for qid in exact_raw if qid not in probs]
    if unknown:
        raise ValueError(f"{len(unknown)} question(s) have no no-answer probability, e.g. {unknown[0]!r}")
    exact = _apply_no_answer_threshold(exact_raw, probs, has_answer, na_prob_thresh)
    f1 = _apply_no_answer_threshold(f1_raw, probs, has_answer, na_prob_thresh)

    result = _summary(exact, f1, list(exact))
    for prefix, answerable in (("HasAns", True), ("NoAns", False)):
        qids = [qid for qid, has in has_answer.items() if has == answerable]
        if qids:
            result.update({f"{prefix}_{key}": value for key, value in _summary(exact, f1, qids).items()})
    if na_probs is not None:
        result.update(best_thresholds(predictions, exact_raw, f1_raw, na_probs, has_answer))
    return result


# ---------------------------------------------------------------- the command line


def _read_json(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise ValueError(f"{path}: cannot read the file ({e.strerror})") from None
    except ValueError as e:  # not JSON, or not UTF-8
        raise ValueError(f"{path}: not a JSON file ({e})") from None


def _dataset(path: str) -> list:
    """The "data" list of an official SQuAD JSON file, or the articles of flat data
    (`jaxqa.squad.sources`: .jsonl, .json rows, .csv, .parquet)."""
    file = Path(path)
    if (
        file.is_file()
        and file.suffix in sources.FLAT_FILES
        and not (file.suffix == ".json" and sources.is_official(file))
    ):
        return sources.read(path).articles
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise ValueError(f'{path}: expected a SQuAD JSON object with a "data" list')
    try:
        check_dataset(data["data"])
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    return data["data"]


def _read_mapping(path: str, value_types: tuple, what: str) -> dict:
    mapping = _read_json(path)
    if not isinstance(mapping, dict) or not all(
        isinstance(v, value_types) and not isinstance(v, bool) for v in mapping.values()
    ):
        raise ValueError(f"{path}: expected a JSON object mapping question ids to {what}")
    return mapping


def main(argv: list[str] | None = None, prog: str = "python -m jaxqa.squad.metric") -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Official SQuAD v2.0 evaluation (also scores SQuAD 1.1 data). "
        "The official script's precision-recall plots (--out-image-dir) are not supported.",
    )
    parser.add_argument(
        "data_file",
        metavar="data.json",
        help="SQuAD data JSON file, or flat data (.jsonl, .json rows, .csv, .parquet).",
    )
    parser.add_argument("pred_file", metavar="pred.json", help="Predictions: question id -> answer text.")
    parser.add_argument("--out-file", "-o", metavar="eval.json", help="Write the metrics here, not to stdout.")
    parser.add_argument(
        "--na-prob-file", "-n", metavar="na_prob.json", help="Probability of no answer per question id."
    )
    parser.add_argument(
        "--na-prob-thresh",
        "-t",
        type=float,
        default=1.0,
        help='Predict "" if the no-answer probability exceeds this (default = 1.0).',
    )
    # Rejected rather than ignored: with it the official script adds pr_*_ap keys.
    parser.add_argument("--out-image-dir", "-p", metavar="out_images", help="Not supported (no plots).")
    args = parser.parse_args(argv)
    if args.out_image_dir:
        parser.error("--out-image-dir: precision-recall plots are not supported")

    try:
        dataset = _dataset(args.data_file)
        predictions = _read_mapping(args.pred_file, (str,), "answer strings")
        na_probs = None
        if args.na_prob_file:
            na_probs = _read_mapping(args.na_prob_file, (int, float), "numbers")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        result = compute(dataset, predictions, na_probs, args.na_prob_thresh)
    except ValueError as e:
        inputs = ", ".join(filter(None, (args.data_file, args.pred_file, args.na_prob_file)))
        print(f"error: {inputs}: {e}", file=sys.stderr)
        return 2

    # As the official script: compact JSON to the file, or indented JSON to stdout.
    if args.out_file is None:
        print(json.dumps(result, indent=2))
        return 0
    try:
        write_file(args.out_file, json.dumps(result))
    except Error as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
