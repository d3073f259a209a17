"""The padded-length lever of jaxqa's pipeline on the CPU: one question at a
time, the same model with windows padded to multiples of each step, the
pipelines taking the questions in turns in one process (the machine's speed
drifts between runs, so separate runs do not compare).

    python benchmarks/cpu/buckets.py [--models bert-base,minilm] [--steps 64,32,16] [--questions 40]

Each pipeline first answers every question once, untimed, so that it has
compiled what it needs. Reports each step's median and mean latency, the
programs it compiled, and the median against the first step's.
Results: benchmarks/results/buckets_cpu.json.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import jaxqa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for lib
from lib import inputs, paths, records, same_weights, timing


def measure(name: str, folder: Path, steps: list[int], questions: list[dict]) -> list[dict]:
    model = jaxqa.load_pretrained(folder)
    pipelines = {step: jaxqa.pipeline(model, seq_buckets=[*range(step, 384, step), 384]) for step in steps}
    for qa in pipelines.values():
        for pair in questions:
            qa(**pair)
    seconds: dict[int, list[float]] = {step: [] for step in steps}
    for pair in questions:
        for step, qa in pipelines.items():
            started = time.perf_counter()
            qa(**pair)
            seconds[step].append(time.perf_counter() - started)
    first = np.median(seconds[steps[0]])
    return [
        {
            "model": name,
            "step": step,
            **timing.summary(seconds[step]),
            "mean_ms": round(1e3 * float(np.mean(seconds[step])), 2),
            "programs": pipelines[step].traces,
            "vs_first_step": round(float(np.median(seconds[step]) / first), 3),
        }
        for step in steps
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="bert-base,minilm")
    p.add_argument("--steps", default="64,32,16")
    p.add_argument("--questions", type=int, default=40)
    p.add_argument("--squad-dir", type=Path, default=paths.SQUAD)
    p.add_argument("--workdir", type=Path, default=paths.WEIGHTS)
    args = p.parse_args()
    steps = [int(step) for step in args.steps.split(",")]
    questions = inputs.squad_questions(args.squad_dir / "dev-v1.1.json", args.questions)
    rows = []
    for name in args.models.split(","):
        rows += measure(name, same_weights.folders(name, args.workdir)[1], steps, questions)
    records.write({"questions": args.questions, "squad_file": "dev-v1.1.json", "steps": steps}, rows)


if __name__ == "__main__":
    main()
