"""One question at a time on the CPU, the latency a user of a QA service feels:
jaxqa's pipeline against the `transformers` question-answering pipeline, on the
same weights and the same real SQuAD dev questions.

    python benchmarks/cpu_latency.py [--models bert-base,squeezebert,mobilebert,minilm] [--questions 60]

Per model:
- warm latency, median and p90, of each side and their ratio. Each side runs in
  a process of its own (their thread pools never compete for the cores), both
  are warmed up (jaxqa compiles every bucket it may use, then both answer
  `--warm` questions), then they take the questions in turns. The row says
  whether jaxqa compiled anything after its warm-up, and how many answers agree.
- the first question in a fresh process: the seconds to load the weights, to
  answer (compiling included), and from the start of the process to the
  answer, for jaxqa with its persistent compilation cache empty and then warm,
  and for PyTorch.
Questions are the first of evenly spaced paragraphs of dev-v1.1.json, so
context lengths vary as SQuAD's do. Weights come from `same_weights.py`.
Results: benchmarks/results/cpu_latency_cpu.json (cpu_latency_step<N>_cpu.json
with --bucket-step N).
"""

import argparse
import json
import multiprocessing
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
    import jaxqa
    from jaxqa import compilation_cache
    compilation_cache.enable(cache)
    qa = jaxqa.pipeline(folder)
else:
    import transformers
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
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


def serve(side: str, folder: str, warm_questions: list[dict], bucket_step: int | None, conn) -> None:
    """A worker process: builds one side's pipeline, warms it up, then answers
    each question it is sent with (answer, seconds, compiled programs so far)."""
    started = time.perf_counter()
    if side == "jaxqa":
        import jaxqa

        buckets = None if bucket_step is None else [*range(bucket_step, 384, bucket_step), 384]
        qa = jaxqa.pipeline(folder, seq_buckets=buckets)
        qa.warm_up()
    else:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
        qa = transformers.pipeline("question-answering", model=folder, tokenizer=folder, device="cpu")
    for pair in warm_questions:
        qa(**pair)
    conn.send(time.perf_counter() - started)
    while (pair := conn.recv()) is not None:
        begun = time.perf_counter()
        answer = qa(**pair)
        conn.send((answer, time.perf_counter() - begun, getattr(qa, "traces", 0)))


def warm_latency(hf_folder: Path, our_folder: Path, questions: list[dict], warm: int, bucket_step: int | None) -> dict:
    """Each side runs in a process of its own (their thread pools never compete);
    they take the questions in turns, one at a time."""
    context = multiprocessing.get_context("spawn")
    sides = {}
    for side, folder in (("jaxqa", our_folder), ("pytorch", hf_folder)):
        ours, theirs = context.Pipe()
        worker = context.Process(target=serve, args=(side, str(folder), questions[:warm], bucket_step, theirs))
        worker.start()
        sides[side] = (worker, ours)
    ready = {side: conn.recv() for side, (_, conn) in sides.items()}
    seconds = {side: [] for side in sides}
    answers = {side: [] for side in sides}
    programs = []
    for pair in questions:
        for side, (_, conn) in sides.items():
            conn.send(pair)
            answer, took, traces = conn.recv()
            answers[side].append((answer["answer"], answer["start"], answer["end"]))
            seconds[side].append(took)
            if side == "jaxqa":
                programs.append(traces)
    for worker, conn in sides.values():
        conn.send(None)
        worker.join()
    ours, theirs = record.summary(seconds["jaxqa"]), record.summary(seconds["pytorch"])
    agree = sum(a == b for a, b in zip(answers["jaxqa"], answers["pytorch"]))
    return {
        "jaxqa_median_ms": ours["median_ms"], "jaxqa_p90_ms": ours["p90_ms"],
        "pytorch_median_ms": theirs["median_ms"], "pytorch_p90_ms": theirs["p90_ms"],
        "ratio_median": round(ours["median_ms"] / theirs["median_ms"], 3),
        "ratio_p90": round(ours["p90_ms"] / theirs["p90_ms"], 3),
        "agree": f"{agree}/{len(questions)}",
        "jaxqa_ready_s": round(ready["jaxqa"], 1),
        "recompiled_after_warm_up": programs[-1] != programs[0],
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
    p.add_argument("--bucket-step", type=int, default=None,
                   help="jaxqa's padded lengths step by this many tokens (default: the pipeline's own)")
    p.add_argument("--squad-dir", type=Path, default=ROOT.parent / "shared" / "squad")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "jaxqa-benchmark-weights")
    args = p.parse_args()
    questions = squad_questions(args.squad_dir / "dev-v1.1.json", args.questions)
    rows = []
    for name in args.models.split(","):
        hf_folder, our_folder = same_weights.folders(name, args.workdir)
        rows.append({"model": name, **warm_latency(hf_folder, our_folder, questions, args.warm, args.bucket_step),
                     **cold_start(hf_folder, our_folder, questions[0])})
        print(json.dumps(rows[-1]), flush=True)
    settings = {"questions": args.questions, "squad_file": "dev-v1.1.json", "warm": args.warm,
                "bucket_step": args.bucket_step or "pipeline default"}
    record.write("cpu_latency" + (f"_step{args.bucket_step}" if args.bucket_step else ""), settings, rows)


if __name__ == "__main__":
    main()
