"""Accuracy and batch throughput of one checkpoint in each precision:
`python -m jaxqa.evaluate --precision MODE` on the first questions of
dev-v1.1.json, each mode in a process of its own, one after the other; the
modes onnx-fp32 and onnx-int8 evaluate the checkpoint's ONNX export
(`jaxqa-export --precision fp32|int8`) under ONNX Runtime, and litert-fp32
and litert-int8 its LiteRT export (signatures of 64, 128, ..., 384 tokens) under LiteRT.

    python benchmarks/accuracy/precision_eval.py [--checkpoint runs/minilm-cpu/train/model] [--questions 1000]
        [--modes fp32,bf16,int8,onnx-fp32,onnx-int8,litert-fp32,litert-int8] [--variant WORD]

Per mode: EM/F1, their difference to float32's, the share of answers equal to
float32's, and the evaluation's windows per second (as jaxqa.evaluate logs it:
featurized windows through the model and decoding, loading excluded). The
default checkpoint is the quick start's fine-tuned MiniLM.
Results: benchmarks/results/precision_eval_cpu.json (precision_eval_<WORD>_cpu.json
with --variant WORD).
"""

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for lib
from lib import paths, records

MODES = ("fp32", "bf16", "int8", "onnx-fp32", "onnx-int8", "litert-fp32", "litert-int8")


def first_questions(path: Path, count: int) -> dict:
    """The SQuAD file cut after its first `count` questions."""
    squad = json.loads(path.read_text(encoding="utf-8"))
    articles, left = [], count
    for article in squad["data"]:
        paragraphs = []
        for paragraph in article["paragraphs"]:
            if left <= 0:
                break
            qas = paragraph["qas"][:left]
            left -= len(qas)
            paragraphs.append({**paragraph, "qas": qas})
        if paragraphs:
            articles.append({**article, "paragraphs": paragraphs})
    return {**squad, "data": articles}


def evaluate(checkpoint: Path, data: Path, mode: str, batch_size: int, out: Path) -> dict:
    if "-" in mode:
        from jaxqa.export import write

        fmt, precision = mode.split("-")
        checkpoint = write.export(checkpoint, out / "export", fmt, precision)
        mode = "auto"  # an export runs in its own precision
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "jaxqa.evaluate",
            "--checkpoint",
            str(checkpoint),
            "--data",
            str(data),
            "--out-dir",
            str(out),
            "--precision",
            mode,
            "--batch-size",
            str(batch_size),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=paths.ROOT,
    )
    metrics = json.loads(done.stdout)
    rate = re.search(r"(\d+) features of (\d+) questions in ([\d.]+)s: ([\d.]+) features/s", done.stderr)
    assert rate, done.stderr  # jaxqa.evaluate's summary line
    windows, _, seconds, per_second = rate.groups()
    answers = json.loads((out / "predictions.json").read_text())
    return {
        "exact": round(metrics["exact"], 2),
        "f1": round(metrics["f1"], 2),
        "windows": int(windows),
        "seconds": float(seconds),
        "windows_per_s": float(per_second),
        "answers": answers,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, default=paths.ROOT / "runs" / "minilm-cpu" / "train" / "model")
    p.add_argument("--questions", type=int, default=1000)
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--squad-dir", type=Path, default=paths.SQUAD)
    p.add_argument("--variant", default="", help="a word for the record's name, e.g. the machine (avx2)")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "dev.json"
        data.write_text(json.dumps(first_questions(args.squad_dir / "dev-v1.1.json", args.questions)))
        results = {
            mode: evaluate(args.checkpoint, data, mode, args.batch_size, Path(tmp) / mode)
            for mode in args.modes.split(",")
        }
    answers = {mode: result.pop("answers") for mode, result in results.items()}
    reference = results.get("fp32")
    for mode, result in results.items():
        row = {"mode": mode, **result}
        if reference:
            row["f1_minus_fp32"] = round(result["f1"] - reference["f1"], 2)
            same = sum(answers[mode][qid] == text for qid, text in answers["fp32"].items())
            row["same_answer_as_fp32"] = f"{same}/{len(answers[mode])}"
            row["windows_per_s_vs_fp32"] = round(result["windows_per_s"] / reference["windows_per_s"], 3)
        rows.append(row)
    settings = {
        "checkpoint": str(args.checkpoint),
        "questions": args.questions,
        "squad_file": "dev-v1.1.json",
        "batch_size": args.batch_size,
    }
    records.write(settings, rows, args.variant)


if __name__ == "__main__":
    main()
