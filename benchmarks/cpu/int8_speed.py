"""int8's speed against another commit's: jaxqa's int8 (XLA) and its ONNX and
LiteRT int8 exports as this tree makes them against those of COMMIT, one
question at a time, side by side in one run, with PyTorch's float32 and dynamic
int8 beside them. (Its record compares int8 that left the feed-forward output
products float32, at its commit, with every product int8, at b5a3b01.)

    python benchmarks/cpu/int8_speed.py --before COMMIT [--models bert-base,minilm]
        [--finetuned runs/minilm-cpu/train/model] [--questions 40]

"Before" runs from a git worktree of COMMIT (`lib/trees.py`): XLA's int8 in
its jaxqa, the exports written by its exporter; this tree's pipeline serves
every export. Weights come from `lib/same_weights.py`. Each row: a side's
median and p90 latency, its ratio to the same runtime before, and its answers
alike with PyTorch float32's (`lib/sides.py`).
Results: benchmarks/results/int8_speed_cpu.json.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for lib
from lib import inputs, paths, records, same_weights, sides, trees

RUNTIMES = ("jaxqa", "onnx", "litert")


def export_before(before: Path, folder: Path, fmt: str, workdir: Path) -> Path:
    """`folder` exported to int8 in `fmt` by COMMIT's exporter."""
    out = workdir / f"{folder.name}-{fmt}-int8-before"
    env = {**os.environ, "PYTHONPATH": str(before)}
    command = [
        sys.executable,
        "-m",
        "jaxqa.export",
        str(folder.resolve()),
        str(out),
        "--format",
        fmt,
        "--precision",
        "int8",
    ]
    # Run from COMMIT's tree: `python -m` puts the working folder first on the path.
    subprocess.run([*command, "--overwrite"], env=env, cwd=before, check=True, capture_output=True)
    return out


def model_rows(name: str, folders: tuple[Path, Path], before: Path, questions: list[dict], args) -> list[dict]:
    """A row per side for one model's (Hugging Face folder, jaxqa folder)."""
    hf_folder, folder = folders
    runs = {f"pytorch-{mode}": (f"pytorch-{mode}", hf_folder) for mode in ("fp32", "int8")}
    for runtime in RUNTIMES:
        kind = f"{runtime}-int8"
        runs[kind] = (kind, sides.side_folder(kind, hf_folder, folder, args.workdir))
        runs[f"{kind}-before"] = (
            kind,
            folder if runtime == "jaxqa" else export_before(before, folder, runtime, args.workdir),
        )
    got = {
        row["side"]: row for row in sides.warm_latency(runs, questions, args.warm, None, {"jaxqa-int8-before": before})
    }
    rows = []
    for side, row in got.items():
        kind = side.removesuffix("-before")
        if side == kind and f"{kind}-before" in got:
            row["vs_before"] = round(row["median_ms"] / got[f"{kind}-before"]["median_ms"], 3)
        rows.append({"model": name, **row})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--before", required=True, help="the commit whose int8 this tree's is measured against")
    p.add_argument("--models", default="bert-base,minilm", help="of lib/same_weights.py")
    p.add_argument("--finetuned", type=Path, default=None, help="a jaxqa checkpoint of one's own to add")
    p.add_argument("--questions", type=int, default=40)
    p.add_argument("--warm", type=int, default=3, help="questions asked of every side before timing")
    p.add_argument("--workdir", type=Path, default=paths.WEIGHTS)
    args = p.parse_args()
    before = trees.worktree(args.before)
    questions = inputs.squad_questions(paths.SQUAD / "dev-v1.1.json", args.questions)
    pairs = [(name, same_weights.folders(name, args.workdir)) for name in filter(None, args.models.split(","))]
    if args.finetuned:
        pairs.append((f"finetuned {args.finetuned}", same_weights.exported(args.finetuned, args.workdir)))
    rows = [row for name, folders in pairs for row in model_rows(name, folders, before, questions, args)]
    settings = {"before": args.before, "questions": args.questions, "warm": args.warm, "squad_file": "dev-v1.1.json"}
    records.write(settings, rows)


if __name__ == "__main__":
    main()
