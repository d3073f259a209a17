"""One question at a time on the CPU, the latency a user of a QA service feels:
jaxqa's pipeline against the `transformers` question-answering pipeline, on the
same weights and the same real SQuAD dev questions, in every precision.

    python benchmarks/cpu/latency.py [--models bert-base,squeezebert,mobilebert,minilm]
        [--sides jaxqa-auto,jaxqa-fp32,jaxqa-bf16,jaxqa-int8,pytorch-fp32,pytorch-bf16,pytorch-int8,
                 onnx-fp32,onnx-int8,litert-fp32,litert-int8,torchonnx-fp32,torchonnx-int8]
        [--finetuned runs/minilm-cpu/train/model] [--questions 60] [--variant WORD]

Sides (lib/sides.py): jaxqa's pipeline with `precision=` fp32, bf16 or int8, and
`jaxqa-auto`, its `runtime` auto over the checkpoint with the run's ONNX and
LiteRT exports beside it (each row says what it chose); the transformers
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
context lengths vary as SQuAD's do. Weights come from `lib/same_weights.py`.
Results: benchmarks/results/latency_cpu.json (latency_step<N>_cpu.json with
--bucket-step N, latency_<WORD>_cpu.json with --variant WORD).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for lib
from lib import inputs, paths, records, same_weights, sides

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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(same_weights.NAMES), help="of lib/same_weights.py; '' for none")
    p.add_argument(
        "--finetuned",
        type=Path,
        default=None,
        help="a jaxqa checkpoint of one's own (e.g. the quick start's runs/minilm-cpu/train/model) to add",
    )
    p.add_argument("--sides", default=",".join(sides.SIDES))
    p.add_argument("--questions", type=int, default=60)
    p.add_argument("--warm", type=int, default=5, help="questions asked of every side before timing")
    p.add_argument(
        "--bucket-step",
        type=int,
        default=None,
        help="jaxqa's padded lengths step by this many tokens (default: the pipeline's own)",
    )
    p.add_argument("--no-cold-start", action="store_true", help="skip the fresh-process first questions")
    p.add_argument("--squad-dir", type=Path, default=paths.SQUAD)
    p.add_argument("--workdir", type=Path, default=paths.WEIGHTS)
    p.add_argument("--variant", default="", help="a word for the record's name, e.g. the machine (avx2)")
    args = p.parse_args()
    chosen = args.sides.split(",")
    if unknown := set(chosen) - set(sides.SIDES):
        p.error(f"--sides: unknown {sorted(unknown)}; choose from {', '.join(sides.SIDES)}")
    questions = inputs.squad_questions(args.squad_dir / "dev-v1.1.json", args.questions)
    pairs = [(name, same_weights.folders(name, args.workdir)) for name in filter(None, args.models.split(","))]
    if args.finetuned:
        pairs.append((f"finetuned {args.finetuned}", same_weights.exported(args.finetuned, args.workdir)))
    rows = []
    for name, (hf_folder, our_folder) in pairs:
        runs = {
            side: (side, sides.side_folder(side, hf_folder, our_folder, args.workdir))
            for side in chosen
            if side != "jaxqa-auto"
        }
        if "jaxqa-auto" in chosen:
            exports = [folder for kind, folder in runs.values() if kind.split("-")[0] in ("onnx", "litert")]
            runs["jaxqa-auto"] = ("jaxqa-auto", sides.with_exports_beside(our_folder, exports, args.workdir))
        for row in sides.warm_latency(runs, questions, args.warm, args.bucket_step):
            rows.append({"model": name, **row})
            print(json.dumps(rows[-1]), flush=True)
        if not args.no_cold_start:
            rows.append({"model": name, "side": "first question", **cold_start(hf_folder, our_folder, questions[0])})
            print(json.dumps(rows[-1]), flush=True)
    settings = {
        "questions": args.questions,
        "squad_file": "dev-v1.1.json",
        "warm": args.warm,
        "sides": chosen,
        "bucket_step": args.bucket_step or "pipeline default",
        "xla_flags": os.environ.get("XLA_FLAGS", ""),  # e.g. --xla_cpu_use_onednn=true, set for every side
    }
    records.write(settings, rows, f"step{args.bucket_step}" if args.bucket_step else "", args.variant)


if __name__ == "__main__":
    main()
