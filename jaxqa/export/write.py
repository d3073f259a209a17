"""A checkpoint folder written as an export folder, ONNX or LiteRT.

    jaxqa-export CKPT [OUT] [--format onnx|litert] [--precision fp32|int8]
        [--sequence N] [--length-step S] [--task-library] [--overwrite]

OUT defaults to `CKPT/exports/<format>-<precision>`, beside the checkpoint's
weights, where `jaxqa.pipeline(CKPT)` finds it and measures it against XLA
(`jaxqa.runtimes`). OUT holds the model file (`model.onnx` or `model.tflite`), the checkpoint's
`config.json` and tokenizer files, and `export.json` (format, precision,
inputs and outputs, a LiteRT model's window lengths, the config's sizes).

ONNX: the model takes `input_ids`, `attention_mask` and `token_type_ids`, each
int32 (batch, sequence) with both dimensions free, and gives `start_logits` and
`end_logits`, float32 (batch, sequence), as the jaxqa model does. `int8` is
ONNX Runtime's dynamic quantization of the float32 export: int8 weights per
output channel, activations quantized per tensor as each product runs
(MatMulInteger), everything else float32.

LiteRT: the same inputs and outputs at fixed shapes (1, L), one signature
`length_{L}` per L: every multiple of `--length-step` (64) below `--sequence`
(384 by default), and `--sequence` itself; jaxqa runs a window in the shortest
that holds it. The signatures share one copy of the weights. `int8` is the AI
Edge Quantizer's dynamic range quantization: int8 weights per output channel
and an int8 embedding table, activations quantized as each product runs.
`--task-library` writes the one signature that the TensorFlow Lite Task
Library's `BertQuestionAnswerer` expects: inputs `ids`, `mask`, `segment_ids`,
outputs `end_logits` then `start_logits`, [1, 384].
"""

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import export as jax_export

from jaxqa.checkpoint import atomic_folder, copy_tokenizer, open_checkpoint
from jaxqa.errors import Error
from jaxqa.export.format import (
    DEFAULT_LENGTH,
    DEFAULT_LENGTH_STEP,
    FORMATS,
    INPUTS,
    MODEL_FILES,
    OUTPUTS,
    PRECISIONS,
    RECORD_FILE,
    SIZES,
    TASK_LIBRARY_INPUTS,
    TASK_LIBRARY_LENGTH,
    TASK_LIBRARY_OUTPUTS,
    beside,
)
from jaxqa.export.program import file_weights, span_program
from jaxqa.squad.tokenizer import TOKENIZER_FILES, load_tokenizer


def _onnx():
    try:
        import onnx
        import onnxruntime  # noqa: F401  (the int8 step and every user of the export need it)
    except ImportError:
        raise Error('exporting to ONNX needs onnx and onnxruntime: pip install "jaxqa[onnx]"') from None
    return onnx


def _onnx_quantizer():
    """ONNX Runtime's dynamic quantizer (QuantType, quantize_dynamic)."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as err:
        raise Error(f'an int8 ONNX export needs ONNX Runtime\'s quantizer ({err}): pip install "jaxqa[onnx]"') from None
    return QuantType, quantize_dynamic


def _check_tools(fmt: str, precision: str) -> None:
    """Refuses an export whose converter or quantizer is not installed, before
    anything is converted."""
    from jaxqa.export import litert

    if fmt == "onnx":
        _onnx()
        if precision == "int8":
            _onnx_quantizer()
    else:
        litert.converter_modules()
        if precision == "int8":
            litert.quantizer_modules()


def span_model_onnx(config, params: dict):
    """The ONNX model of `SpanModel(config)` with `params` (float32), its batch
    and sequence free, its weights named as files name them."""
    from jaxqa.export.graph import to_onnx

    batch, length = jax_export.symbolic_shape(
        "batch, sequence", constraints=(f"sequence <= {config.max_position_embeddings}",)
    )
    closed = span_program(config, "onnx", jax.ShapeDtypeStruct((batch, length), jnp.int32))
    return to_onnx(
        closed, file_weights(config, params), INPUTS, OUTPUTS, doc=f"jaxqa {type(config).__name__} span model"
    )


def _write_onnx(config, params: dict, path: Path, precision: str) -> dict:
    onnx = _onnx()
    proto = span_model_onnx(config, params)
    if precision == "fp32":
        onnx.save(proto, str(path))
    else:
        QuantType, quantize_dynamic = _onnx_quantizer()

        # The float32 model is written beside the int8 one, in the export's
        # temporary folder, so that a killed export leaves it nowhere for good.
        fp32 = path.with_name(f"fp32.{path.name}")
        try:
            onnx.save(proto, str(fp32))
            # ONNX Runtime's integer products take a matrix's per-column scales
            # only: products with a stack of matrices (SqueezeBERT's grouped
            # (G, K, N) weights) stay float32.
            ranks = {tensor.name: len(tensor.dims) for tensor in proto.graph.initializer}
            stacked = [n.name for n in proto.graph.node if n.op_type == "MatMul" and ranks.get(n.input[1], 2) > 2]
            logging.disable(logging.WARNING)  # the quantizer warns of every tensor it leaves float32
            try:
                quantize_dynamic(
                    fp32,
                    path,
                    per_channel=True,
                    reduce_range=True,
                    weight_type=QuantType.QInt8,
                    nodes_to_exclude=stacked,
                )
            finally:
                logging.disable(logging.NOTSET)
        finally:
            fp32.unlink(missing_ok=True)
    return {"inputs": list(INPUTS), "outputs": list(OUTPUTS)}


def _write_litert(
    config, params: dict, path: Path, precision: str, lengths: tuple[int, ...], task_library: bool
) -> dict:
    from jaxqa.export import litert

    inputs, outputs = (TASK_LIBRARY_INPUTS, TASK_LIBRARY_OUTPUTS) if task_library else (INPUTS, OUTPUTS)
    flatbuffer = litert.span_model_tflite(config, params, lengths, inputs, outputs)
    path.write_bytes(flatbuffer if precision == "fp32" else litert.dynamic_int8(flatbuffer))
    return {"inputs": list(inputs), "outputs": list(outputs), "lengths": list(lengths)}


def _lengths(config, fmt: str, length: int | None, step: int | None, task_library: bool) -> tuple[int, ...]:
    """A LiteRT model's window lengths, checked; () for ONNX, whose length is free."""
    given = [flag for flag, value in (("sequence", length), ("length-step", step)) if value is not None]
    if fmt != "litert":
        if given or task_library:
            raise Error(f"--{(given or ['task-library'])[0]} applies to --format litert only")
        return ()
    if task_library:
        if config.max_position_embeddings < TASK_LIBRARY_LENGTH:
            raise Error(
                f"--task-library: the Task Library's BertQuestionAnswerer takes windows of {TASK_LIBRARY_LENGTH} "
                f"tokens, and the model has positions for at most {config.max_position_embeddings}"
            )
        if given and (length, step) != (TASK_LIBRARY_LENGTH, None):
            raise Error(
                f"--{given[0]}: the Task Library's BertQuestionAnswerer takes one window, [1, {TASK_LIBRARY_LENGTH}]"
            )
        return (TASK_LIBRARY_LENGTH,)
    length = DEFAULT_LENGTH if length is None else length
    step = DEFAULT_LENGTH_STEP if step is None else step
    if not 1 <= length <= config.max_position_embeddings:
        raise Error(f"--sequence {length}: the model has positions 1 to {config.max_position_embeddings}")
    if step < 1:
        raise Error(f"--length-step {step}: must be at least 1")
    return (*range(step, length, step), length)


def export(
    src: str | Path,
    out: str | Path | None = None,
    fmt: str = "onnx",
    precision: str = "fp32",
    overwrite: bool = False,
    length: int | None = None,
    length_step: int | None = None,
    task_library: bool = False,
) -> Path:
    """Writes the checkpoint at `src` (a jaxqa or Hugging Face folder, or a hub
    id) as an export folder at `out` in format `fmt`, whole or not at all; by
    default at `CKPT/exports/<format>-<precision>`, beside its weights."""
    if fmt not in FORMATS:
        raise Error(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if precision not in PRECISIONS:
        raise Error(f"--precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    source = open_checkpoint(src)
    if out is None:
        out = beside(source.folder, fmt, precision)
    lengths = _lengths(source.config, fmt, length, length_step, task_library)
    if any((source.folder / name).is_file() for name in TOKENIZER_FILES):
        load_tokenizer(source.folder, source.config.vocab_size)  # refuses one with ids past the model's vocabulary
    _check_tools(fmt, precision)
    params = nn.meta.unbox(
        source.read_params(need_head="an export answers questions, so it needs a fine-tuned span head")
    )
    with atomic_folder(out, overwrite, source.folder) as tmp:
        path = tmp / MODEL_FILES[fmt]
        if fmt == "onnx":
            io = _write_onnx(source.config, params, path, precision)
        else:
            io = _write_litert(source.config, params, path, precision, lengths, task_library)
        shutil.copy2(source.folder / "config.json", tmp / "config.json")
        copy_tokenizer(source.folder, tmp)
        record = {
            "format": fmt,
            "model_type": source.model_type,
            "precision": precision,
            **io,
            "sizes": {key: getattr(source.config, key) for key in SIZES},
        }
        (tmp / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return Path(out)


def main(argv=None, prog: str = "jaxqa-export") -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Writes a checkpoint as an ONNX model that ONNX Runtime runs or a LiteRT model that the LiteRT "
        "interpreter runs, and that jaxqa.pipeline, jaxqa.predict and jaxqa.evaluate serve.",
    )
    parser.add_argument("checkpoint", help="jaxqa or Hugging Face checkpoint folder, or hub id, with a span head")
    parser.add_argument(
        "out",
        nargs="?",
        help="export folder to write (default: CHECKPOINT/exports/FORMAT-PRECISION, which jaxqa.pipeline finds)",
    )
    parser.add_argument("--format", default="onnx", choices=FORMATS, help="the export's format")
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=PRECISIONS,
        help="fp32: the model as jaxqa runs it in float32; int8: its products' weights in int8 per output channel",
    )
    parser.add_argument(
        "--sequence",
        type=int,
        default=None,
        help=f"litert: the longest window in tokens (default {DEFAULT_LENGTH}); ONNX's length is free",
    )
    parser.add_argument(
        "--length-step",
        type=int,
        default=None,
        help=f"litert: a signature for every multiple of this many tokens below --sequence (default {DEFAULT_LENGTH_STEP})",
    )
    parser.add_argument(
        "--task-library",
        action="store_true",
        help="litert: the TensorFlow Lite Task Library BertQuestionAnswerer's inputs and outputs, [1, 384]",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    args = parser.parse_args(argv)
    try:
        out = export(
            args.checkpoint,
            args.out,
            args.format,
            args.precision,
            args.overwrite,
            args.sequence,
            args.length_step,
            args.task_library,
        )
    except Error as err:
        print(f"jaxqa-export: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # atomic_folder has removed what was written
        print(
            f"jaxqa-export: error: interrupted; nothing written to {args.out or 'CHECKPOINT/exports'}", file=sys.stderr
        )
        return 130
    model_file = out / MODEL_FILES[args.format]
    print(f"wrote {model_file} ({model_file.stat().st_size / 2**20:.1f} MiB, {args.precision})")
    return 0
