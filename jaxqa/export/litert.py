"""A JAX program as a LiteRT (.tflite) model: the StableHLO that `jax.export`
serializes for the program jaxqa runs (`jaxqa.export.program`), lowered to
LiteRT's ops by the LiteRT converter, and its int8 made by the AI Edge
Quantizer.

A LiteRT model here has fixed shapes, as phones run it: the converter writes
every shape into the file. So it holds one signature per window length,
`length_{N}` over (1, N), all sharing one copy of the weights (the program's
constants), and a window runs in the shortest that holds it.

The program is traced as `execution.for_export("litert")` asks: attention as
separate products, which the converter maps to batched products, and exact
GELU and the word embeddings' lookup as composites that it maps to LiteRT's
own kernels (GELU otherwise arrives as erf's polynomial spelled out in a
dozen element-wise ops; a lookup's table int8 then quantizes too).
"""

import contextlib
import io

import jax
import jax.numpy as jnp
from jax import export as jax_export

from jaxqa.errors import Error
from jaxqa.export.format import signature
from jaxqa.export.program import file_weights, span_program


def converter_modules():
    """The LiteRT converter's modules. It has no public API for converting
    StableHLO that jax.export wrote: these are its private modules, as
    litert-converter 0.5.0 names them (tests/test_export_litert.py checks that
    they still hold what is used here)."""
    try:
        from litert_converter import _stablehlo
        from litert_converter.mlir import ir, passmanager
        from litert_converter.mlir._mlir_libs import converter_api_ext
    except ImportError:
        raise Error('exporting to LiteRT needs the LiteRT converter: pip install "jaxqa[litert]"') from None
    return _stablehlo, ir, passmanager, converter_api_ext


def span_model_tflite(
    config,
    params: dict,
    lengths: tuple[int, ...],
    inputs: tuple[str, ...],
    outputs: tuple[str, ...],
) -> bytes:
    """The LiteRT flatbuffer of `SpanModel(config)` with `params` (float32):
    for each of `lengths` a signature `length_{N}` over int32 windows (1, N),
    taking `inputs` (ids, mask, token types) and giving `outputs`, the names
    "start_logits" and "end_logits" in the order the model gives them, each (1, N)."""
    stablehlo, ir, passmanager, converter_api = converter_modules()
    context = ir.Context()
    converter_api.prepare_mlir_context(context)
    modules = []
    constants = [jnp.asarray(weight) for weight in file_weights(config, params).values()]
    with context:
        for length in lengths:
            window = jax.ShapeDtypeStruct((1, length), jnp.int32)
            closed = span_program(config, "litert", window)

            def forward(input_ids, attention_mask, token_type_ids, closed=closed):
                start, end = jax.core.eval_jaxpr(
                    closed.jaxpr, closed.consts, *constants, input_ids, attention_mask, token_type_ids
                )
                logits = {"start_logits": start, "end_logits": end}
                return tuple(logits[name] for name in outputs)

            # keep_unused: DistilBERT has no token types, but every export takes the same three inputs.
            exported = jax_export.export(jax.jit(forward, keep_unused=True), platforms=("cpu",))(window, window, window)
            module = stablehlo.deserialize_portable_artifact(context, exported.mlir_module_serialized)
            converter_api.run_convert_to_tfl_passes(
                module, passmanager.PassManager(), converter_api.ConvertToTFLConfig()
            )
            (main,) = module.body.operations  # the converted program is one function
            converter_api.set_signature(main, signature(length), list(inputs), list(outputs))
            main.attributes["sym_name"] = ir.StringAttr.get(signature(length))  # merged functions need their own names
            modules.append(module)
        # One file, one copy of each constant: the exporter stores equal buffers once.
        merged = converter_api.merge_modules(modules) if len(modules) > 1 else modules[0]
        return converter_api.export_flatbuffer_to_bytes(merged.operation)


def quantizer_modules():
    """The AI Edge Quantizer's modules, or an `Error` saying how to install them."""
    try:
        from ai_edge_quantizer import qtyping, quantizer, recipe
    except ImportError:
        raise Error('an int8 LiteRT export needs the AI Edge Quantizer: pip install "jaxqa[litert]"') from None
    return qtyping, quantizer, recipe


def dynamic_int8(flatbuffer: bytes) -> bytes:
    """The model with its products' weights and the embedding table in int8,
    symmetric per output channel, and the products' activations quantized as
    each runs (the AI Edge Quantizer's dynamic_wi8_afp32); the rest float32.
    Batched products stay float32: LiteRT's BATCH_MATMUL takes int8 weights
    on the right only, and SqueezeBERT's grouped products hold them on the left."""
    qtyping, quantizer, recipe = quantizer_modules()
    int8 = quantizer.Quantizer(flatbuffer, recipe.dynamic_wi8_afp32())
    int8.update_quantization_recipe(".*", qtyping.TFLOperationName.BATCH_MATMUL, algorithm_key="no_quantize")
    # It reports sizes on stdout and progress bars on stderr; a command's own output stays its own.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return bytes(int8.quantize().quantized_model)
