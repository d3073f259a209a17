"""A checkpoint folder written as an ONNX export folder.

    jaxqa-export CKPT OUT [--precision fp32|int8] [--overwrite]

OUT holds `model.onnx`, the checkpoint's `config.json` and tokenizer files,
and `export.json` (format, precision, inputs and outputs). The model takes
`input_ids`, `attention_mask` and `token_type_ids`, each int32 (batch,
sequence) with both dimensions free, and gives `start_logits` and
`end_logits`, float32 (batch, sequence), as the jaxqa model does.

`int8` is ONNX Runtime's dynamic quantization of the float32 export: int8
weights per output channel, activations quantized per tensor as each product
runs (MatMulInteger), everything else float32.
"""

import argparse
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from jax import export as jax_export

from jaxqa.checkpoint import atomic_folder, copy_tokenizer, open_checkpoint
from jaxqa.errors import Error
from jaxqa.models.encoder import SpanModel
from jaxqa.models.stacking import Execution

FORMAT = "onnx"
MODEL_FILE = "model.onnx"
RECORD_FILE = "export.json"
PRECISIONS = ("fp32", "int8")
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OUTPUTS = ("start_logits", "end_logits")


def _onnx():
    try:
        import onnx
        import onnxruntime  # noqa: F401  (the int8 step and every user of the export need it)
    except ImportError:
        raise Error('exporting to ONNX needs onnx and onnxruntime: pip install "jaxqa[onnx]"') from None
    return onnx


def span_model_onnx(config, params: dict):
    """The ONNX model of `SpanModel(config)` with `params` (float32, one
    `layer_{i}` per layer), its batch and sequence free."""
    from jaxqa.export.graph import to_onnx

    model = SpanModel(config, execution=Execution(scan=False))
    flat = traverse_util.flatten_dict(jax.device_get(params), sep="/")
    flat = {key: np.asarray(flat[key], np.float32) for key in sorted(flat)}  # jax flattens a dict by sorted keys
    batch, length = jax_export.symbolic_shape(
        "batch, sequence", constraints=(f"sequence <= {config.max_position_embeddings}",)
    )
    window = jax.ShapeDtypeStruct((batch, length), jnp.int32)

    def forward(flat_params, input_ids, attention_mask, token_type_ids):
        tree = traverse_util.unflatten_dict(flat_params, sep="/")
        return model.apply({"params": tree}, input_ids, attention_mask, token_type_ids)

    closed = jax.make_jaxpr(forward)(flat, window, window, window)
    return to_onnx(closed, flat, INPUTS, OUTPUTS, doc=f"jaxqa {type(config).__name__} span model")


def export_onnx(src: str | Path, out: str | Path, precision: str = "fp32", overwrite: bool = False) -> Path:
    """Writes the checkpoint at `src` (a jaxqa or Hugging Face folder, or a hub
    id) as an ONNX export folder at `out`, whole or not at all."""
    if precision not in PRECISIONS:
        raise Error(f"--precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    onnx = _onnx()
    source = open_checkpoint(src)
    params = source.read_params(need_head="an export answers questions, so it needs a fine-tuned span head")
    proto = span_model_onnx(source.config, nn.meta.unbox(params))
    with atomic_folder(out, overwrite) as tmp:
        if precision == "fp32":
            onnx.save(proto, str(tmp / MODEL_FILE))
        else:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            with tempfile.TemporaryDirectory() as scratch:
                fp32 = Path(scratch) / MODEL_FILE
                onnx.save(proto, str(fp32))
                logging.disable(logging.WARNING)  # the quantizer warns of every tensor it leaves float32
                try:
                    quantize_dynamic(fp32, tmp / MODEL_FILE, per_channel=True, weight_type=QuantType.QInt8)
                finally:
                    logging.disable(logging.NOTSET)
        shutil.copy2(source.folder / "config.json", tmp / "config.json")
        copy_tokenizer(source.folder, tmp)
        record = {
            "format": FORMAT,
            "model_type": source.model_type,
            "precision": precision,
            "inputs": list(INPUTS),
            "outputs": list(OUTPUTS),
        }
        (tmp / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return Path(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="jaxqa-export",
        description="Writes a checkpoint as an ONNX model that ONNX Runtime runs, and that jaxqa.pipeline, "
        "jaxqa.predict and jaxqa.evaluate serve.",
    )
    parser.add_argument("checkpoint", help="jaxqa or Hugging Face checkpoint folder, or hub id, with a span head")
    parser.add_argument("out", help="export folder to write")
    parser.add_argument("--format", default=FORMAT, choices=(FORMAT,), help="the export's format")
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=PRECISIONS,
        help="fp32: the model as jaxqa runs it in float32; int8: its products' weights in int8 per output channel",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    args = parser.parse_args(argv)
    try:
        out = export_onnx(args.checkpoint, args.out, args.precision, args.overwrite)
    except Error as err:
        print(f"jaxqa-export: error: {err}", file=sys.stderr)
        return 2
    size = (out / MODEL_FILE).stat().st_size
    print(f"wrote {out / MODEL_FILE} ({size / 2**20:.1f} MiB, {args.precision})")
    return 0
