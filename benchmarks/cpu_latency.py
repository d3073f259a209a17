"""One question at a time on the CPU, the latency a user of a QA service feels:
jaxqa's pipeline against the `transformers` question-answering pipeline, on the
same weights and the same real SQuAD dev questions, alternating question by
question in one process.

    python benchmarks/cpu_latency.py [--models bert-base,squeezebert,mobilebert,minilm] [--questions 60]

Per model: warm latency (median, p90) of each side and their ratio, after both
are warmed up (jaxqa compiles every bucket it may use; afterwards the number
of compiled programs must not grow, and the row says whether it did); the
agreement of the answers; and the first question's latency in a fresh process,
including loading the weights and compiling, with JAX's persistent compilation
cache empty and then warm. Questions are the first of evenly spaced paragraphs
of dev-v1.1.json, so context lengths vary as SQuAD's do. Weights come from
`same_weights.py`. Results: benchmarks/results/cpu_latency_cpu.json.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import record
import same_weights

ROOT = Path(__file__).resolve().parents[1]

# Run in a fresh interpreter: the seconds from the start of the process to the
# weights loaded, and to the first answer.
FIRST_QUESTION = """
import sys, time
started = time.perf_counter()
side, folder, cache, question, context = sys.argv[1:]
if side == "jaxqa":
    import jax
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    import jaxqa
    qa = jaxqa.pipeline(folder)
else:
    import transformers
    qa = transformers.pipeline("question-answering", model=folder, tokenizer=folder, device="cpu")
loaded = time.perf_counter()
qa(question=question, context=context)
answered = time.perf_counter()
print(loaded - started, answered - loaded, answered - started)
"""


def squad_questions(path: Path, count: int) -> list[dict]:
    """The first question of `count` evenly spaced paragraphs."""
    articles = json.loads(path.read_text(encoding="utf-8"))["data"]
    paragraphs = [p for article in articles for p in article["paragraphs"]]
    chosen = np.linspace(0, len(paragraphs) - 1, count).round().astype(int)
    return [{"question": paragraphs[i]["qas"][0]["question"], "context": paragraphs[i]["context"]} for i in chosen]


def timed(fn, *args, **kwargs):
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - started


def warm_latency(hf_folder: Path, our_folder: Path, questions: list[dict], warm: int) -> dict:
    import transformers

    import jaxqa

    theirs = transformers.pipeline("question-answering", model=str(hf_folder), tokenizer=str(hf_folder), device="cpu")
    ours = jaxqa.pipeline(our_folder)
    _, warm_up_seconds = timed(ours.warm_up)
    for pair in questions[:warm]:
        ours(**pair)
        theirs(**pair)
    programs = ours.traces
    our_seconds, their_seconds, agree = [], [], 0
    for pair in questions:
        a, seconds = timed(ours, **pair)
        our_seconds.append(seconds)
        b, seconds = timed(theirs, **pair)
        their_seconds.append(seconds)
        agree += (a["answer"], a["start"], a["end"]) == (b["answer"], b["start"], b["end"])
    ours_ms, theirs_ms = record.summary(our_seconds), record.summary(their_seconds)
    return {
        "jaxqa_median_ms": ours_ms["median_ms"], "jaxqa_p90_ms": ours_ms["p90_ms"],
        "pytorch_median_ms": theirs_ms["median_ms"], "pytorch_p90_ms": theirs_ms["p90_ms"],
        "ratio_median": round(ours_ms["median_ms"] / theirs_ms["median_ms"], 3),
        "ratio_p90": round(ours_ms["p90_ms"] / theirs_ms["p90_ms"], 3),
        "agree": f"{agree}/{len(questions)}",
        "jaxqa_warm_up_s": round(warm_up_seconds, 1),
        "recompiled_after_warm_up": ours.traces != programs,
    }


def first_question(side: str, folder: Path, cache: Path, pair: dict) -> tuple[float, float, float]:
    """(load, first answer, total) seconds in a fresh process."""
    out = subprocess.run([sys.executable, "-c", FIRST_QUESTION, side, str(folder), str(cache), pair["question"],
                          pair["context"]], capture_output=True, text=True, check=True)
    load, answer, total = map(float, out.stdout.split()[-3:])
    return load, answer, total


def cold_start(hf_folder: Path, our_folder: Path, pair: dict) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        _, cold, _ = first_question("jaxqa", our_folder, Path(cache), pair)
        load, warm, total = first_question("jaxqa", our_folder, Path(cache), pair)
        their_load, their_first, their_total = first_question("pytorch", hf_folder, Path(cache), pair)
    return {
        "jaxqa_first_s_cache_empty": round(cold, 2), "jaxqa_first_s_cache_warm": round(warm, 2),
        "jaxqa_load_s": round(load, 2), "jaxqa_process_to_answer_s": round(total, 2),
        "pytorch_first_s": round(their_first, 2), "pytorch_load_s": round(their_load, 2),
        "pytorch_process_to_answer_s": round(their_total, 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(same_weights.NAMES))
    p.add_argument("--questions", type=int, default=60)
    p.add_argument("--warm", type=int, default=5, help="questions asked of both sides before timing")
    p.add_argument("--squad-dir", type=Path, default=ROOT.parent / "shared" / "squad")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "jaxqa-benchmark-weights")
    args = p.parse_args()
    questions = squad_questions(args.squad_dir / "dev-v1.1.json", args.questions)
    rows = []
    for name in args.models.split(","):
        hf_folder, our_folder = same_weights.folders(name, args.workdir)
        rows.append({"model": name, **warm_latency(hf_folder, our_folder, questions, args.warm),
                     **cold_start(hf_folder, our_folder, questions[0])})
        print(json.dumps(rows[-1]), flush=True)
    record.write("cpu_latency", {"questions": args.questions, "squad_file": "dev-v1.1.json", "warm": args.warm}, rows)


if __name__ == "__main__":
    main()
