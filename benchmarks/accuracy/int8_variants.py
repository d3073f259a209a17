"""Which int8 keeps float32's answers: each variant's share of answers equal to
jaxqa's float32 answers, on real SQuAD dev questions, for two models:

- `finetuned`: the quick start's fine-tuned MiniLM (runs/minilm-cpu/train/model);
- `minilm`: the real all-MiniLM-L6-v2 encoder with a span head from seed 0
  (`lib/same_weights.py`), whose near-flat span logits make near-ties common:
  a harsh test of a precision.

    python benchmarks/accuracy/int8_variants.py [--questions 1000] [--harsh-questions 300]
        [--variants int8,int8-all,...] [--variant WORD]

Variants of jaxqa's XLA forward (weights per output channel, symmetric;
activations per token, as `jaxqa.models.layers.matmul` quantizes them):
- `bf16`, `int8`: jaxqa's modes as they ship (`jaxqa.precision`; int8 makes
  every encoder product int8);
- `weights-only`: int8 weights, dequantized, with float32 activations;
  `weights-only-g<N>`: the same with a scale per group of N input rows of each
  output channel, not one per channel;
  `activations-only`: float32 weights, activations rounded as int8 would;
- `float-<names>`: every product int8 but those named (a `/`-separated list of
  query, key, value, attention_output, intermediate, output: the feed-forward
  network's output product, whose input is the GELU of the widened features);
- `smooth-<alpha>`: SmoothQuant's scale migration on every int8 product (each
  product's input channel j divided by s_j = a_j^alpha / w_j^(1-alpha), its
  kernel row j multiplied by it, a_j the channel's largest |activation| on 64
  windows of the first train-v1.1.json questions, w_j its kernel row's largest
  |weight|); `float-<names>+smooth-<alpha>` both.
The variants jaxqa does not ship run through this script's own product
(`variant_matmul`), installed in `jaxqa.models.layers` for the measurement.
Exports (`jaxqa export`, run by their runtimes): `onnx-int8`, `litert-int8`.

Results: benchmarks/results/int8_variants_cpu.json.
"""

import argparse
import sys
import tempfile
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for lib
from lib import paths, records, same_weights

from jaxqa import evaluate, models, precision
from jaxqa.engine import Compiled
from jaxqa.export import write
from jaxqa.models import layers
from jaxqa.pretrained import load_pretrained, open_model
from jaxqa.squad import sources
from jaxqa.squad.features import FeatureSettings, eval_features

VARIANTS = (
    "bf16,int8,weights-only,activations-only,float-query/key/value,float-attention_output,float-intermediate,"
    "float-output,float-output/intermediate,smooth-0.5,float-output+smooth-0.5,onnx-int8,litert-int8"
)
WINDOWS = FeatureSettings(384, 128, 64)
CALIBRATION_WINDOWS = 64

# --- the product of the variants jaxqa does not ship -------------------------
ROUND_ACTIVATIONS = [False]  # `activations-only`: float32 products of int8-rounded activations


def rounded_per_token(x):
    scale = jnp.max(jnp.abs(x), axis=-1, keepdims=True) / 127  # (..., 1)
    return jnp.round(x / jnp.where(scale > 0, scale, 1)) * scale


def variant_scale(module: nn.Module, kernel):
    """`layers.quantization_scale`, and beside a smoothed kernel its `kernel_smooth` (I,)."""
    scale = SHIPPED_SCALE(module, kernel)
    if scale is not None and module.has_variable("params", "kernel_smooth"):
        return scale, module.param("kernel_smooth", nn.initializers.ones_init(), kernel.shape[:-1], jnp.float32)
    return scale


def variant_matmul(x, kernel, kernel_scale, dtype):
    if isinstance(kernel_scale, tuple):  # smoothed: the input divided by s, the kernel already times s
        kernel_scale, smooth = kernel_scale
        x = x.astype(jnp.float32) / smooth
    elif ROUND_ACTIVATIONS[0] and kernel.dtype == jnp.float32:
        x = rounded_per_token(x.astype(jnp.float32))
    return SHIPPED_MATMUL(x, kernel, kernel_scale, dtype)


SHIPPED_SCALE, SHIPPED_MATMUL = layers.quantization_scale, layers.matmul


# --- the variants' parameters -------------------------------------------------
def activation_maxima(model, calibration) -> dict[str, np.ndarray]:
    """Per stacked kernel path, the largest |input| of each channel, (L, I), over the real tokens of `calibration`."""
    held = jax.device_get(model.runtime.params)
    ids, mask, types = (np.asarray(a[:CALIBRATION_WINDOWS]) for a in calibration)
    real = mask.astype(bool)
    found: dict[tuple[int, str], np.ndarray] = {}
    x = model.module.embedded(held["embeddings"], ids, types)
    for i in range(model.config.num_hidden_layers):

        def seen(next_fun, args, kwargs, context, i=i):
            if isinstance(context.module, layers.Dense) and context.method_name == "__call__":
                found[(i, context.module.name)] = np.abs(np.asarray(args[0]))[real].max(axis=0)
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(seen):
            x = model.module.layer(i).apply({"params": held[f"layer_{i}"]}, x, mask, True)
    names = {name for _, name in found}
    return {name: np.stack([found[(i, name)] for i in range(model.config.num_hidden_layers)]) for name in names}


def variant_params(fp32: dict, variant: str, maxima) -> dict:
    """The stacked float32 parameters `fp32` as `variant` runs them."""
    if variant in ("bf16", "int8"):
        return precision.prepare(fp32, variant)
    flat = traverse_util.flatten_dict(fp32, sep="/")
    parts = variant.split("+")
    kept = {name for part in parts if part.startswith("float-") for name in part.removeprefix("float-").split("/")}
    alpha = next((float(part.removeprefix("smooth-")) for part in parts if part.startswith("smooth-")), None)
    for path in [path for path in flat if precision.is_quantized(path) and path.split("/")[-2] not in kept]:
        if variant == "activations-only":
            continue
        kernel = np.asarray(flat[path], np.float32)  # (L, I, O)
        if alpha is not None:
            a = np.maximum(maxima[path.split("/")[-2]], 1e-5)  # (L, I)
            w = np.maximum(np.abs(kernel).max(axis=-1), 1e-5)  # (L, I)
            smooth = np.clip(a**alpha / w ** (1 - alpha), 1e-2, 1e2).astype(np.float32)
            kernel = kernel * smooth[..., None]
            flat[path + "_smooth"] = smooth
        if variant.startswith("weights-only"):
            group = int(variant.split("-g")[1]) if "-g" in variant else kernel.shape[-2]
            groups = kernel.reshape(*kernel.shape[:-2], -1, group, kernel.shape[-1])  # (L, I / group, group, O)
            flat[path] = precision.dequantize(*precision.quantize(groups)).reshape(kernel.shape)
            continue
        flat[path], flat[path + "_scale"] = precision.quantize(kernel)
    return traverse_util.unflatten_dict({path: jnp.asarray(value) for path, value in flat.items()}, sep="/")


def runtime(checkpoint: Path, model, variant: str, maxima, tmp: Path):
    """What runs `variant`: an export's runtime, or XLA over the variant's parameters."""
    models.forward.cache_clear()  # each variant's programs traced anew, with its own product
    ROUND_ACTIVATIONS[0] = variant == "activations-only"
    if variant in ("onnx-int8", "litert-int8"):
        fmt = variant.split("-")[0]
        return open_model(write.export(checkpoint, tmp / variant, fmt, "int8"), "int8").runtime
    fp32 = precision.prepare(model.params, "fp32")
    return Compiled(model.module, variant_params(fp32, variant, maxima))


def agreement(name: str, checkpoint: Path, questions: int, variants: list[str], tmp: Path) -> list[dict]:
    model = load_pretrained(checkpoint)
    dev = sources.read(str(paths.SQUAD / "dev-v1.1.json"), "validation").head(questions)
    features = eval_features(dev, model.tokenizer, WINDOWS)
    train = sources.read(str(paths.SQUAD / "train-v1.1.json"), "train").head(CALIBRATION_WINDOWS)
    calibration = eval_features(train, model.tokenizer, WINDOWS)
    maxima = activation_maxima(model, (calibration.input_ids, calibration.attention_mask, calibration.token_type_ids))

    def answers(runs) -> dict:
        engine = evaluate.engine(runs, WINDOWS.max_seq_length, 16)
        return evaluate.answer(engine, dev.examples, features, False, 0.0).answers

    reference = answers(Compiled(model.module, precision.prepare(model.params, "fp32")))
    rows = []
    for variant in variants:
        got = answers(runtime(checkpoint, model, variant, maxima, tmp / name))
        same = sum(got[qid] == text for qid, text in reference.items())
        rows.append(
            {"variant": variant, "same_answer_as_fp32": f"{same}/{len(reference)}", "share": same / len(reference)}
        )
        print(f"{name} {variant}: {rows[-1]['same_answer_as_fp32']}", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, default=paths.ROOT / "runs" / "minilm-cpu" / "train" / "model")
    p.add_argument("--questions", type=int, default=1000, help="of dev-v1.1.json, for the fine-tuned model")
    p.add_argument("--harsh-questions", type=int, default=300, help="of dev-v1.1.json, for the seeded-head MiniLM")
    p.add_argument("--variants", default=VARIANTS)
    p.add_argument("--variant", default="", help="a word for the record's name, e.g. the machine (avx2)")
    args = p.parse_args()
    variants = args.variants.split(",")
    layers.quantization_scale, layers.matmul = variant_scale, variant_matmul
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        _, harsh = same_weights.folders("minilm", paths.WEIGHTS)
        for name, checkpoint, count in (
            ("finetuned", args.checkpoint, args.questions),
            ("minilm", harsh, args.harsh_questions),
        ):
            rows += [{"model": name, **row} for row in agreement(name, checkpoint, count, variants, Path(tmp))]
    settings = {
        "finetuned": str(args.checkpoint),
        "questions": {"finetuned": args.questions, "minilm": args.harsh_questions},
        "squad_file": "dev-v1.1.json",
        "calibration": f"{CALIBRATION_WINDOWS} windows of the first train-v1.1.json questions",
        "windows": "384 tokens, stride 128",
    }
    records.write(settings, rows, args.variant)


if __name__ == "__main__":
    main()
