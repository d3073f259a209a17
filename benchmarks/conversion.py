"""Converting each full-size model here: wall time of `convert/pt2flax.py`, the
parameter counts on both sides, and the max |diff| of the span logits against
`transformers` PyTorch on one padded batch (random-initialised published
configs: bert-base-uncased, squeezebert-uncased, mobilebert-uncased).

    python benchmarks/conversion.py

Results go to benchmarks/results/conversion_<platform>.json.
"""

import importlib.util
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
import torch
import transformers

import jaxqa

ROOT = Path(__file__).resolve().parents[1]
CLASSES = {
    "bert": (transformers.BertConfig, transformers.BertForQuestionAnswering),
    "squeezebert": (transformers.SqueezeBertConfig, transformers.SqueezeBertForQuestionAnswering),
    "mobilebert": (transformers.MobileBertConfig, transformers.MobileBertForQuestionAnswering),
}


def cli(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "convert" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def batch(vocab_size: int, length: int = 128):
    rng = np.random.default_rng(0)
    ids = rng.integers(1, vocab_size, (4, length)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[2:, length // 2:] = 0  # two padded rows
    types = np.zeros_like(ids)
    types[:, length // 3:] = 1
    return ids * mask, mask, types


def main() -> None:
    pt2flax = cli("pt2flax")
    rows = []
    for model_type, (config_class, model_class) in CLASSES.items():
        torch.manual_seed(0)
        model = model_class(config_class()).eval()
        with tempfile.TemporaryDirectory() as tmp:
            src, out = Path(tmp) / "hf", Path(tmp) / "jaxqa"
            model.save_pretrained(src)
            started = time.perf_counter()
            assert pt2flax.main([str(src), str(out)]) == 0
            seconds = time.perf_counter() - started
            ours = jaxqa.load_pretrained(out)
            inputs = batch(model.config.vocab_size)
            with torch.no_grad():
                theirs = model(*(torch.as_tensor(x, dtype=torch.long) for x in inputs))
            real = inputs[1] == 1
            diff = max(float(np.abs(np.asarray(a) - b.numpy())[real].max())
                       for a, b in zip(ours(*inputs), (theirs.start_logits, theirs.end_logits)))
        rows.append({"model": model_type, "convert_seconds": round(seconds, 1),
                     "jaxqa_parameters": int(sum(x.size for x in jax.tree_util.tree_leaves(ours.params))),
                     "pytorch_parameters": sum(p.numel() for p in model.parameters()), "max_abs_diff": diff})
        print(json.dumps(rows[-1]), flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    result = {"command": "python benchmarks/conversion.py", "commit": commit,
              "device": f"{platform.processor() or platform.machine()}, {jax.devices()[0].platform}", "rows": rows}
    out = ROOT / "benchmarks" / "results" / f"conversion_{jax.devices()[0].platform}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
