"""Converting each full-size model here: wall time of `convert/pt2flax.py`, the
parameter counts on both sides, and the max |diff| of the span logits against
`transformers` PyTorch on one padded batch (random-initialised published
configs: bert-base-uncased, squeezebert-uncased, mobilebert-uncased,
distilbert-base-uncased, and the latter with sinusoidal positions).

    python benchmarks/accuracy/conversion.py [--models bert,squeezebert,mobilebert,distilbert,distilbert-sinusoidal]

Results go to benchmarks/results/conversion_<platform>.json.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
import torch
import transformers

import jaxqa
from jaxqa.convert import pt2flax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for lib
from lib import records

CONFIGS = {
    "bert": (transformers.BertConfig, {}, transformers.BertForQuestionAnswering),
    "squeezebert": (transformers.SqueezeBertConfig, {}, transformers.SqueezeBertForQuestionAnswering),
    "mobilebert": (transformers.MobileBertConfig, {}, transformers.MobileBertForQuestionAnswering),
    "distilbert": (transformers.DistilBertConfig, {}, transformers.DistilBertForQuestionAnswering),
    "distilbert-sinusoidal": (
        transformers.DistilBertConfig,
        {"sinusoidal_pos_embds": True},
        transformers.DistilBertForQuestionAnswering,
    ),
}


def batch(vocab_size: int, length: int = 128):
    rng = np.random.default_rng(0)
    ids = rng.integers(1, vocab_size, (4, length)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[2:, length // 2 :] = 0  # two padded rows
    types = np.zeros_like(ids)
    types[:, length // 3 :] = 1
    return ids * mask, mask, types


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(CONFIGS))
    args = p.parse_args()
    rows = []
    for name in args.models.split(","):
        config_class, fields, model_class = CONFIGS[name]
        torch.manual_seed(0)
        model = model_class(config_class(**fields)).eval()
        with tempfile.TemporaryDirectory() as tmp:
            src, out = Path(tmp) / "hf", Path(tmp) / "jaxqa"
            model.save_pretrained(src)
            started = time.perf_counter()
            assert pt2flax.main([str(src), str(out)]) == 0
            seconds = time.perf_counter() - started
            ours = jaxqa.load_pretrained(out)
            inputs = batch(model.config.vocab_size)
            ids, mask, types = (torch.as_tensor(x, dtype=torch.long) for x in inputs)
            extra = {} if model.config.model_type == "distilbert" else {"token_type_ids": types}  # it has none
            with torch.no_grad():
                theirs = model(input_ids=ids, attention_mask=mask, **extra)
            real = inputs[1] == 1
            diff = max(
                float(np.abs(np.asarray(a) - b.numpy())[real].max())
                for a, b in zip(ours(*inputs), (theirs.start_logits, theirs.end_logits))
            )
        rows.append(
            {
                "model": name,
                "convert_seconds": round(seconds, 1),
                "jaxqa_parameters": int(sum(x.size for x in jax.tree_util.tree_leaves(ours.params))),
                "pytorch_parameters": sum(p.numel() for p in model.parameters()),
                "max_abs_diff": diff,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    records.write(vars(args), rows)


if __name__ == "__main__":
    main()
