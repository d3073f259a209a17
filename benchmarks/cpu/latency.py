"""One question at a time on the CPU, the latency a user of a QA service feels:
jaxqa's pipeline against the `transformers` question-answering pipeline, on the
same weights and the same real SQuAD dev questions, in every precision.

    python benchmarks/cpu_latency.py [--models bert-base,squeezebert,mobilebert,minilm]
        [--sides jaxqa-fp32,jaxqa-bf16,jaxqa-int8,pytorch-fp32,pytorch-bf16,pytorch-int8,
                 onnx-fp32,onnx-int8,litert-fp32,litert-int8,torchonnx-fp32,torchonnx-int8]
        [--finetuned runs/minilm-cpu/train/model] [--questions 60]

Sides: jaxqa's pipeline with `precision=` fp32, bf16 or int8; the transformers
pipeline in float32, under bfloat16 autocast, and with every `nn.Linear`
quantized by PyTorch's dynamic int8 quantization (SqueezeBERT's encoder is made
of Conv1d, which that leaves in float32); jaxqa's pipeline over its ONNX
exports (`jaxqa-export`, float32 and int8) under ONNX Runtime and over its
LiteRT exports (signatures of 64, 128, ..., 384 tokens) under the LiteRT interpreter; and, the path a
PyTorch user takes, ONNX Runtime over `torch.onnx.export` of the transformers
model (float32, and ONNX Runtime's dynamic int8 of it), served by the same
jaxqa pipeline so that only the graph differs.

Per model:
- warm latency, median and p90, of each side, and its ratio to PyTorch float32
  and to the fastest PyTorch side. Each side runs in a process of its own
  (their thread pools never compete for the cores), started and warmed up one
  after the other (jaxqa compiles every bucket it may use, then each answers
  `--warm` questions); then they take the questions in turns. Each row says
  how many answers agree with PyTorch float32's, and whether jaxqa compiled
  anything after its warm-up. On random weights (all but `--finetuned` and
  minilm's encoder) the span logits are nearly flat, so agreement there says
  little about a precision; the fine-tuned model's does.
- the first question in a fresh process: the seconds to load the weights, to
  answer (compiling included), and from the start of the process to the
  answer, for jaxqa (precision auto) with its persistent compilation cache
  empty and then warm, and for PyTorch float32.
Questions are the first of evenly spaced paragraphs of dev-v1.1.json, so
context lengths vary as SQuAD's do. Weights come from `same_weights.py`.
Results: benchmarks/results/cpu_latency_cpu.json (cpu_latency_step<N>_cpu.json
with --bucket-step N).
"""

import argparse
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import common
import numpy as np
import same_weights

from jaxqa.checkpoint import copy_tokenizer

SIDES = (
    "jaxqa-fp32",
    "jaxqa-bf16",
    "jaxqa-int8",
    "pytorch-fp32",
    "pytorch-bf16",
    "pytorch-int8",
    "onnx-fp32",
    "onnx-int8",
    "litert-fp32",
    "litert-int8",
    "torchonnx-fp32",
    "torchonnx-int8",
)
SERVED_BY_JAXQA = ("jaxqa", "onnx", "litert", "torchonnx")  # runtimes that jaxqa's pipeline serves

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


def serve(side: str, folder: str, warm_questions: list[dict], bucket_step: int | None, tree: str | None, conn) -> None:
    """A worker process: builds one side's pipeline (jaxqa from the checkout
    `tree`, if given), warms it up, then answers each question it is sent with
    (answer, seconds, compiled programs so far)."""
    started = time.perf_counter()
    runtime, mode = side.split("-")
    compiling = 0.0
    if runtime in SERVED_BY_JAXQA:
        if tree:  # this module's imports brought this checkout's jaxqa: that of `tree` replaces it
            for name in [name for name in sys.modules if name.split(".")[0] == "jaxqa"]:
                del sys.modules[name]
            sys.path.insert(0, tree)
        import jaxqa

        buckets = None if bucket_step is None else [*range(bucket_step, 384, bucket_step), 384]
        ours = jaxqa.pipeline(folder, seq_buckets=buckets, precision=mode if runtime == "jaxqa" else "auto")
        compiling = time.perf_counter()
        ours.warm_up()
        compiling = time.perf_counter() - compiling
        ask: Callable = ours
    else:
        import torch
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
        qa = transformers.pipeline("question-answering", model=folder, tokenizer=folder, device="cpu")
        if mode == "int8":
            qa.model = torch.ao.quantization.quantize_dynamic(qa.model, {torch.nn.Linear}, dtype=torch.qint8)

        def ask(**pair):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
                return qa(**pair)

    for pair in warm_questions:
        ask(**pair)
    conn.send((time.perf_counter() - started, compiling))
    while (pair := conn.recv()) is not None:
        begun = time.perf_counter()
        answer = ask(**pair)
        conn.send((answer, time.perf_counter() - begun, getattr(ask, "traces", 0)))


def warm_latency(
    runs: dict[str, tuple[str, Path]],
    questions: list[dict],
    warm: int,
    bucket_step: int | None,
    trees: dict[str, Path] | None = None,
) -> list[dict]:
    """A row per side: `runs` maps each side's name to what runs (one of SIDES) and
    its folder; `trees` the jaxqa sides that run another checkout to its folder.
    Each side runs in a process of its own (their thread pools never compete),
    warmed up one after the other; they take the questions in turns, one at a
    time."""
    sides = list(runs)
    context = multiprocessing.get_context("spawn")
    workers, ready, warm_up = {}, {}, {}
    for side, (kind, folder) in runs.items():
        ours, theirs = context.Pipe()
        tree = (trees or {}).get(side)
        worker = context.Process(
            target=serve, args=(kind, str(folder), questions[:warm], bucket_step, tree and str(tree), theirs)
        )
        worker.start()
        ready[side], warm_up[side] = ours.recv()
        workers[side] = (worker, ours)
    seconds: dict[str, list[float]] = {side: [] for side in sides}
    answers: dict[str, list[tuple]] = {side: [] for side in sides}
    programs: dict[str, list[int]] = {side: [] for side in sides}
    for pair in questions:
        for side, (_, conn) in workers.items():
            conn.send(pair)
            answer, took, traces = conn.recv()
            answers[side].append((answer["answer"], answer["start"], answer["end"]))
            seconds[side].append(took)
            programs[side].append(traces)
    for worker, conn in workers.values():
        conn.send(None)
        worker.join()
    medians = {side: common.summary(seconds[side])["median_ms"] for side in sides}
    fastest_pytorch = min((side for side in sides if side.startswith("pytorch")), key=medians.__getitem__, default=None)
    rows = []
    for side in sides:
        timing = common.summary(seconds[side])
        row = {"side": side, "median_ms": timing["median_ms"], "p90_ms": timing["p90_ms"]}
        if "pytorch-fp32" in sides:
            row["vs_pytorch_fp32"] = round(timing["median_ms"] / medians["pytorch-fp32"], 3)
        if fastest_pytorch:
            row["vs_fastest_pytorch"] = round(timing["median_ms"] / medians[fastest_pytorch], 3)
        if "pytorch-fp32" in sides:
            agree = sum(a == b for a, b in zip(answers[side], answers["pytorch-fp32"]))
            row["agree_with_pytorch_fp32"] = f"{agree}/{len(questions)}"
        if side.split("-")[0] in SERVED_BY_JAXQA:
            row["ready_s"] = round(ready[side], 1)
            row["warm_up_s"] = round(warm_up[side], 1)  # compiling every bucket
            row["recompiled_after_warm_up"] = programs[side][-1] != programs[side][0]
        rows.append(row)
    return rows


def first_question(side: str, folder: Path, cache: Path, pair: dict) -> tuple[float, float, float]:
    """(load, first answer, total) seconds in a fresh process."""
    out = subprocess.run(
        [sys.executable, "-c", FIRST_QUESTION, side, str(folder), str(cache), pair["question"], pair["context"]],
        capture_output=True,
        text=True,
        check=True,
    )
    load, answer, total = map(float, out.stdout.split()[-3:])
    return load, answer, total


def cold_start(hf_folder: Path, our_folder: Path, pair: dict) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        _, cold, _ = first_question("jaxqa", our_folder, Path(cache), pair)
        load, warm, total = first_question("jaxqa", our_folder, Path(cache), pair)
        their_load, their_first, their_total = first_question("pytorch", hf_folder, Path(cache), pair)
    return {
        "jaxqa_first_s_cache_empty": round(cold, 2),
        "jaxqa_first_s_cache_warm": round(warm, 2),
        "jaxqa_load_s": round(load, 2),
        "jaxqa_process_to_answer_s": round(total, 2),
        "pytorch_first_s": round(their_first, 2),
        "pytorch_load_s": round(their_load, 2),
        "pytorch_process_to_answer_s": round(their_total, 2),
    }


def torch_onnx(hf_folder: Path, out: Path, precision: str) -> Path:
    """An export folder (as `jaxqa-export` writes) holding `torch.onnx.export` of
    the transformers model at `hf_folder`, int32 inputs with batch and sequence
    free; int8 is ONNX Runtime's dynamic quantization of it, as jaxqa-export's."""
    import torch
    import transformers
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from jaxqa.export import write

    if (out / write.RECORD_FILE).is_file():
        return out
    model = transformers.AutoModelForQuestionAnswering.from_pretrained(hf_folder).eval()
    dummy = torch.ones((1, 16), dtype=torch.int32)
    out.mkdir(parents=True, exist_ok=True)
    fp32 = out / ("model.onnx" if precision == "fp32" else "model-fp32.onnx")
    axes = {name: {0: "batch", 1: "sequence"} for name in write.INPUTS + write.OUTPUTS}
    with torch.no_grad():
        torch.onnx.export(
            model,
            (dummy, dummy, dummy),
            str(fp32),
            input_names=list(write.INPUTS),
            output_names=list(write.OUTPUTS),
            dynamic_axes=axes,
            dynamo=False,
        )
    if precision == "int8":
        quantize_dynamic(fp32, out / write.MODEL_FILES["onnx"], per_channel=True, weight_type=QuantType.QInt8)
        fp32.unlink()
    shutil.copy2(hf_folder / "config.json", out / "config.json")
    copy_tokenizer(hf_folder, out)
    record = {
        "format": "onnx",
        "model_type": json.loads((hf_folder / "config.json").read_text())["model_type"],
        "inputs": list(write.INPUTS),
        "outputs": list(write.OUTPUTS),
    }
    (out / write.RECORD_FILE).write_text(json.dumps({**record, "precision": precision, "made_by": "torch.onnx.export"}))
    return out


def side_folder(side: str, hf_folder: Path, our_folder: Path, workdir: Path) -> Path:
    """The folder a side runs: jaxqa's exports made anew by each run (the
    exporter may have changed since the last), the others the first time."""
    runtime, mode = side.split("-")
    if runtime in ("onnx", "litert"):
        from jaxqa.export import write

        return write.export(our_folder, workdir / f"{our_folder.name}-{runtime}-{mode}", runtime, mode, overwrite=True)
    if runtime == "torchonnx":
        return torch_onnx(hf_folder, workdir / f"{hf_folder.name}-torchonnx-{mode}", mode)
    return our_folder if runtime == "jaxqa" else hf_folder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(same_weights.NAMES), help="of same_weights.py; '' for none")
    p.add_argument(
        "--finetuned",
        type=Path,
        default=None,
        help="a jaxqa checkpoint of one's own (e.g. the quick start's runs/minilm-cpu/train/model) to add",
    )
    p.add_argument("--sides", default=",".join(SIDES))
    p.add_argument("--questions", type=int, default=60)
    p.add_argument("--warm", type=int, default=5, help="questions asked of every side before timing")
    p.add_argument(
        "--bucket-step",
        type=int,
        default=None,
        help="jaxqa's padded lengths step by this many tokens (default: the pipeline's own)",
    )
    p.add_argument("--no-cold-start", action="store_true", help="skip the fresh-process first questions")
    p.add_argument("--squad-dir", type=Path, default=common.SQUAD)
    p.add_argument("--workdir", type=Path, default=common.WEIGHTS)
    p.add_argument("--name", default="cpu_latency", help="of the results file")
    args = p.parse_args()
    sides = args.sides.split(",")
    if unknown := set(sides) - set(SIDES):
        p.error(f"--sides: unknown {sorted(unknown)}; choose from {', '.join(SIDES)}")
    questions = squad_questions(args.squad_dir / "dev-v1.1.json", args.questions)
    pairs = [(name, same_weights.folders(name, args.workdir)) for name in filter(None, args.models.split(","))]
    if args.finetuned:
        pairs.append((f"finetuned {args.finetuned}", same_weights.exported(args.finetuned, args.workdir)))
    rows = []
    for name, (hf_folder, our_folder) in pairs:
        runs = {side: (side, side_folder(side, hf_folder, our_folder, args.workdir)) for side in sides}
        for row in warm_latency(runs, questions, args.warm, args.bucket_step):
            rows.append({"model": name, **row})
            print(json.dumps(rows[-1]), flush=True)
        if not args.no_cold_start:
            rows.append({"model": name, "side": "first question", **cold_start(hf_folder, our_folder, questions[0])})
            print(json.dumps(rows[-1]), flush=True)
    settings = {
        "questions": args.questions,
        "squad_file": "dev-v1.1.json",
        "warm": args.warm,
        "sides": sides,
        "bucket_step": args.bucket_step or "pipeline default",
        "xla_flags": os.environ.get("XLA_FLAGS", ""),  # e.g. --xla_cpu_use_onednn=true, set for every side
    }
    common.write(args.name + (f"_step{args.bucket_step}" if args.bucket_step else ""), settings, rows)


if __name__ == "__main__":
    main()
