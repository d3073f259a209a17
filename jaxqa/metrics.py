"""The official SQuAD v2.0 evaluation script's command line (`jaxqa.squad.metric`):

    python -m jaxqa.metrics DATA.json PREDICTIONS.json [--na-prob-file NA_PROBS.json]
        [--na-prob-thresh F] [--out-file OUT.json]

It prints the same JSON as the official script.
"""

import argparse
import json
import sys

from jaxqa.squad import metric


def _read_json(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise ValueError(f"{path}: cannot read the file ({e.strerror})") from None
    except ValueError as e:  # not JSON, or not UTF-8
        raise ValueError(f"{path}: not a JSON file ({e})") from None


def _read_mapping(path: str, value_types: tuple, what: str) -> dict:
    mapping = _read_json(path)
    if not isinstance(mapping, dict) or not all(
        isinstance(v, value_types) and not isinstance(v, bool) for v in mapping.values()
    ):
        raise ValueError(f"{path}: expected a JSON object mapping question ids to {what}")
    return mapping


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jaxqa.metrics",
        description="Official SQuAD v2.0 evaluation (also scores SQuAD 1.1 data). "
        "The official script's precision-recall plots (--out-image-dir) are not supported.",
    )
    parser.add_argument("data_file", metavar="data.json", help="SQuAD data JSON file.")
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
        data = _read_json(args.data_file)
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            raise ValueError(f'{args.data_file}: expected a SQuAD JSON object with a "data" list')
        try:
            metric.check_dataset(data["data"])
        except ValueError as e:
            raise ValueError(f"{args.data_file}: {e}") from None
        predictions = _read_mapping(args.pred_file, (str,), "answer strings")
        na_probs = None
        if args.na_prob_file:
            na_probs = _read_mapping(args.na_prob_file, (int, float), "numbers")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        result = metric.compute(data["data"], predictions, na_probs, args.na_prob_thresh)
    except ValueError as e:
        inputs = ", ".join(filter(None, (args.data_file, args.pred_file, args.na_prob_file)))
        print(f"error: {inputs}: {e}", file=sys.stderr)
        return 2

    # As the official script: compact JSON to the file, or indented JSON to stdout.
    if not args.out_file:
        print(json.dumps(result, indent=2))
        return 0
    try:
        with open(args.out_file, "w") as f:
            json.dump(result, f)
    except OSError as e:
        print(f"error: {args.out_file}: cannot write the file ({e.strerror})", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
