"""Where one question's time goes in jaxqa's pipeline: featurizing, the model
(padding to a bucket, the compiled forward, copying logits back) and decoding,
per precision, one question at a time on real dev questions.

    python benchmarks/cpu/pipeline_profile.py [--models minilm,bert-base] [--modes fp32,bf16,int8] [--questions 40]

Per model and mode: the median milliseconds of each part, the bare forward at
the question's bucket (the compiled program alone, inputs already on the
device), and the share of the pipeline's time spent outside that forward.
Results: benchmarks/results/pipeline_profile_cpu.json.
"""

import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np

import jaxqa
from jaxqa.squad import decode
from jaxqa.squad.examples import Example
from jaxqa.squad.features import featurize_eval

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for lib
from lib import inputs, paths, records, same_weights


def profile(qa, questions: list[dict], warm: int) -> dict:
    parts: dict[str, list[float]] = {
        "featurize_ms": [],
        "model_ms": [],
        "forward_ms": [],
        "decode_ms": [],
        "total_ms": [],
    }
    bucketed = qa.model_logits
    for i, pair in enumerate(questions):
        started = time.perf_counter()
        examples = [Example("0", "", pair["question"], pair["context"], (), (), False)]
        features = featurize_eval(examples, qa.model.tokenizer, qa.settings)
        featurized = time.perf_counter()
        start, end = bucketed(features.input_ids, features.attention_mask, features.token_type_ids)
        modelled = time.perf_counter()
        decode.pipeline_answers(
            [pair["context"]],
            features,
            start,
            end,
            qa._continues_word,
            top_k=1,
            handle_impossible_answer=False,
            max_answer_len=15,
            align_to_words=True,
        )
        done = time.perf_counter()
        # The compiled program alone, on the padded batch the pipeline ran.
        width = int(np.max(features.attention_mask.sum(axis=1)))
        width = min(b for b in bucketed.seq_buckets if b >= width)
        rows = len(features.input_ids)
        batch = min(b for b in bucketed.batch_buckets if b >= rows) if rows <= bucketed.batch_buckets[-1] else None
        if batch is not None:
            arrays = [
                jax.device_put(np.pad(a[:, :width], ((0, batch - rows), (0, 0))))
                for a in (features.input_ids, features.attention_mask, features.token_type_ids)
            ]
            jax.block_until_ready(bucketed._logits(qa.model.params, *arrays))
            begun = time.perf_counter()
            jax.block_until_ready(bucketed._logits(qa.model.params, *arrays))
            forward = time.perf_counter() - begun
        if i < warm:
            continue
        parts["featurize_ms"].append(featurized - started)
        parts["model_ms"].append(modelled - featurized)
        parts["decode_ms"].append(done - modelled)
        parts["total_ms"].append(done - started)
        if batch is not None:
            parts["forward_ms"].append(forward)
    row = {key: round(1e3 * float(np.median(values)), 2) for key, values in parts.items()}
    row["outside_forward"] = round(1 - float(np.median(parts["forward_ms"])) / float(np.median(parts["total_ms"])), 3)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="minilm,bert-base")
    p.add_argument("--modes", default="fp32,bf16,int8")
    p.add_argument("--questions", type=int, default=40)
    p.add_argument("--warm", type=int, default=5)
    p.add_argument("--squad-dir", type=Path, default=paths.SQUAD)
    p.add_argument("--workdir", type=Path, default=paths.WEIGHTS)
    args = p.parse_args()
    questions = inputs.squad_questions(args.squad_dir / "dev-v1.1.json", args.questions + args.warm)
    rows = []
    for name in args.models.split(","):
        _, folder = same_weights.folders(name, args.workdir)
        model = jaxqa.load_pretrained(folder)
        for mode in args.modes.split(","):
            qa = jaxqa.pipeline(model, precision=mode)
            qa.warm_up()
            rows.append({"model": name, "mode": mode, **profile(qa, questions, args.warm)})
            print(rows[-1], flush=True)
    records.write({"questions": args.questions, "warm": args.warm}, rows)


if __name__ == "__main__":
    main()
