"""Batch question answering on a CPU: jaxqa's pipeline against the `transformers`
question-answering pipeline (PyTorch), the same weights on both sides, over
evenly spaced questions of SQuAD 1.1 dev.

    python benchmarks/cpu/batch_speed.py [--questions 200] [--models minilm,bert-base,squeezebert,mobilebert]

Each side answers the whole list of questions at once:
- jaxqa: `jaxqa.pipeline(folder)(question=[...], context=[...])` with its default
  batch size; a first call on the same list, untimed, compiles its shapes.
- transformers: `pipeline("question-answering")(question=[...], context=[...],
  batch_size=--hf-batch-size)`, asked in order of context length so that its
  batches hold little padding (the answers are put back in order); a first call
  on one batch, untimed, warms it up. Tried on 100 questions with MiniLM on a
  2-core CPU, sorting took it from 5-8 to 8-10 questions/s, and batches of 32
  and 64 were its fastest (8 slower, 1 far slower), so 32 is the default.
- jaxqa.evaluate's path: `featurize_eval`, `evaluate.engine` and `AnswerCollector`
  at the command's batch size, 64, windows sorted by length and padded to
  multiples of 64 tokens (`benchmarks/cpu/length_speed.py` compares it with padding
  to 384). Its first round includes compiling the programs it needs, as the
  command's first run does. It decodes as run_qa.py does (no word alignment,
  answers up to 30 tokens), so its answers are not compared.
Model loading is left out. Sides alternate within each of `--repeats` rounds, in
reverse order every other round; the table gives medians, and jaxqa_speedup is a
side's median time over the jaxqa pipeline's. Agreement counts the questions
where jaxqa's pipeline gives transformers' answer, start and end. The folders
with the same weights come from `lib/same_weights.py`. Results go to
benchmarks/results/batch_speed_<N>q_<platform>.json.
"""

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
import transformers

import jaxqa
from jaxqa import evaluate
from jaxqa.engine import Compiled
from jaxqa.squad.examples import Example, read_squad
from jaxqa.squad.features import FeatureSettings, featurize_eval

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for lib
from lib import paths, records, same_weights, timing, train_steps

EVALUATE_BATCH_SIZE = 64  # python -m jaxqa.evaluate's default
# transformers 5.2.0 calls np.array on torch tensors the way numpy 2 deprecates.
warnings.filterwarnings("ignore", message="__array__ implementation doesn't accept a copy keyword")


def dev_questions(path: Path, count: int) -> list[Example]:
    """`count` evenly spaced questions of a SQuAD file."""
    examples = read_squad(path).examples
    return [examples[i] for i in np.linspace(0, len(examples) - 1, count).round().astype(int)]


def jaxqa_answers(qa, examples: list[Example]) -> list[dict]:
    return qa(question=[ex.question for ex in examples], context=[ex.context for ex in examples])


def hf_answers(pipe, examples: list[Example], batch_size: int) -> list[dict]:
    """transformers' answers in the order of `examples`, asked in order of context length."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].context))
    answers = pipe(
        question=[examples[i].question for i in order],
        context=[examples[i].context for i in order],
        batch_size=batch_size,
    )
    answers = [answers] if isinstance(answers, dict) else answers  # one question gives a bare dict
    in_order: list = [None] * len(examples)
    for i, answer in zip(order, answers):
        in_order[i] = answer
    return in_order


def evaluate_path_answers(model, mesh, examples: list[Example]) -> list[str]:
    """The answer texts of `python -m jaxqa.evaluate`'s path, without its on-disk feature cache."""
    features = featurize_eval(examples, model.tokenizer, FeatureSettings())
    runs = evaluate.engine(Compiled(model.module, model.params, mesh), 384, EVALUATE_BATCH_SIZE)
    answers = evaluate.answer(runs, examples, features, False, 0.0).answers
    return [answers[ex.id] for ex in examples]


def agreement(ours: list[dict], theirs: list[dict]) -> int:
    """How many answers have the same text, start and end."""
    return sum((a["answer"], a["start"], a["end"]) == (b["answer"], b["start"], b["end"]) for a, b in zip(ours, theirs))


def measure(name: str, examples: list[Example], workdir: Path, repeats: int, hf_batch_size: int) -> list[dict]:
    """One model's rows: each side's timings, questions per second and agreement with transformers."""
    hf_folder, jaxqa_folder = same_weights.folders(name, workdir)
    qa = jaxqa.pipeline(jaxqa_folder)
    pipe = transformers.pipeline("question-answering", model=str(hf_folder), tokenizer=str(hf_folder))
    mesh = train_steps.device_mesh()
    ours, theirs = "jaxqa pipeline", f"transformers pipeline, batch {hf_batch_size}"
    sides = {
        ours: lambda: jaxqa_answers(qa, examples),
        theirs: lambda: hf_answers(pipe, examples, hf_batch_size),
        f"jaxqa.evaluate path, batch {EVALUATE_BATCH_SIZE}": lambda: evaluate_path_answers(qa.model, mesh, examples),
    }
    jaxqa_answers(qa, examples)  # untimed warm-ups: this one compiles jaxqa's shapes
    hf_answers(pipe, examples[:hf_batch_size], hf_batch_size)

    seconds, answers = timing.in_turns(sides, repeats, reverse_odd_rounds=True, progress=f"{name} ")

    jaxqa_median = float(np.median(seconds[ours]))
    rows = []
    for side in sides:
        median = float(np.median(seconds[side]))
        rows.append(
            {
                "model": name,
                "side": side,
                **timing.summary(seconds[side]),
                "questions_per_s": round(len(examples) / median, 2),
                "jaxqa_speedup": round(median / jaxqa_median, 2),
            }
        )
    rows[0]["same_span_as_hf"] = agreement(answers[ours], answers[theirs])
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--squad-dir", type=Path, default=paths.SQUAD)
    p.add_argument("--questions", type=int, default=200)
    p.add_argument(
        "--models",
        default="minilm,bert-base,squeezebert,mobilebert",
        help=f"comma-separated, from {', '.join(same_weights.NAMES)}",
    )
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--hf-batch-size", type=int, default=32)
    p.add_argument(
        "--workdir",
        type=Path,
        default=paths.ROOT / "runs" / "same_weights",
        help="where the model folders are made (and reused)",
    )
    args = p.parse_args()

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    examples = dev_questions(args.squad_dir / "dev-v1.1.json", args.questions)
    rows = []
    for name in args.models.split(","):
        rows += measure(name, examples, args.workdir, args.repeats, args.hf_batch_size)
    settings = {
        "questions": len(examples),
        "data": "dev-v1.1.json, evenly spaced",
        "models": args.models,
        "repeats": args.repeats,
        "hf_batch_size": args.hf_batch_size,
        "hf_sorted_by_context_length": True,
        "jaxqa_batch_size": "pipeline default (4 on CPU)",
        "evaluate_batch_size": EVALUATE_BATCH_SIZE,
        "torch_threads": torch.get_num_threads(),
        "max_seq_len": 384,
        "doc_stride": 128,
    }
    records.write(settings, rows, f"{len(examples)}q")


if __name__ == "__main__":
    main()
