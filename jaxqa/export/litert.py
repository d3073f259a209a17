"""A JAX program as a LiteRT (.tflite) model: the StableHLO that `jax.export`
serializes for the program jaxqa runs, lowered to LiteRT's ops by the LiteRT
converter, and its int8 made by the AI Edge Quantizer.

A LiteRT model here has fixed shapes, as phones run it: the converter writes
every shape into the file. So it holds one signature per window length,
`length_{N}` over (1, N), all sharing one copy of the weights (the program's
constants), and a window runs in the shortest that holds it.

While the program is traced, three functions of the models are swapped
(`swap.swapped`): attention for the form BERT's exporters write, and two ops
for composites that the converter maps to LiteRT's own kernels: exact GELU,
which otherwise arrives as erf's polynomial spelled out in a dozen
element-wise ops that slow the whole model down, and the word embeddings'
lookup, whose table int8 then quantizes too.
"""

import contextlib
import io

import jax
import jax.numpy as jnp
from jax import export as jax_export

from jaxqa.errors import Error
from jaxqa.export import swap
from jaxqa.models import layers
from jaxqa.models.encoder import SpanModel
from jaxqa.models.stacking import Execution


def signature(length: int) -> str:
    return f"length_{length}"


def _exact_gelu(x, approximate=False):
    return jax.nn.gelu(x, approximate=approximate)


def _take(ids, table):
    return jnp.take(table, ids, axis=0)


# Composites that LiteRT's converter turns into LiteRT's own kernels; none has
# a derivative, so they exist only while a program is traced for export
# (`swap.swapped`).
_tfl_gelu = jax.lax.composite(_exact_gelu, name="tfl.gelu")
_embedding_lookup = jax.lax.composite(_take, name="odml.embedding_lookup")


def _litert_gelu(x):
    return _tfl_gelu(x, approximate=False)


def _litert_gather(table, ids, dtype):
    """`layers.gather` as LiteRT's EMBEDDING_LOOKUP, whose table the int8
    export quantizes (a gather's it would leave float32): (V, D), (B, T) -> (B, T, D)."""
    rows = _embedding_lookup(ids.reshape(-1), table)  # (B*T, D): the kernel takes ids in one dimension
    return rows.reshape(*ids.shape, table.shape[1]).astype(dtype)


def _litert_swaps() -> dict:
    """What a span model's trace for LiteRT swaps: exact GELU and the
    embedding lookup for the composites above, attention for the form the
    converter maps to batched products."""
    return {
        layers.ACTIVATIONS["gelu"]: _litert_gelu,
        layers.gather: _litert_gather,
        layers.fused_attention: swap.matmul_attention,
    }


def _converter():
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
    """The LiteRT flatbuffer of `SpanModel(config)` with `params` (float32,
    one `layer_{i}` per layer): for each of `lengths` a signature
    `length_{N}` over int32 windows (1, N), taking `inputs` (ids, mask, token
    types) and giving `outputs`, the names "start_logits" and "end_logits" in
    the order the model gives them, each (1, N)."""
    stablehlo, ir, passmanager, converter_api = _converter()
    model = SpanModel(config, execution=Execution(scan=False))
    weights = jax.tree.map(jnp.asarray, params)

    def forward(input_ids, attention_mask, token_type_ids):
        start, end = model.apply({"params": weights}, input_ids, attention_mask, token_type_ids)
        logits = {"start_logits": start, "end_logits": end}
        return tuple(logits[name] for name in outputs)

    context = ir.Context()
    converter_api.prepare_mlir_context(context)
    modules = []
    with context:
        for length in lengths:
            window = jax.ShapeDtypeStruct((1, length), jnp.int32)
            with swap.swapped(_litert_swaps()):
                # keep_unused: DistilBERT has no token types, but every export takes the same three inputs.
                program = jax_export.export(jax.jit(forward, keep_unused=True), platforms=("cpu",))
                exported = program(window, window, window)
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


def dynamic_int8(flatbuffer: bytes) -> bytes:
    """The model with its products' weights and the embedding table in int8,
    symmetric per output channel, and the products' activations quantized as
    each runs (the AI Edge Quantizer's dynamic_wi8_afp32); the rest float32.
    Batched products stay float32: LiteRT's BATCH_MATMUL takes int8 weights
    on the right only, and SqueezeBERT's grouped products hold them on the left."""
    try:
        from ai_edge_quantizer import qtyping, quantizer, recipe
    except ImportError:
        raise Error('an int8 LiteRT export needs the AI Edge Quantizer: pip install "jaxqa[litert]"') from None
    int8 = quantizer.Quantizer(flatbuffer, recipe.dynamic_wi8_afp32())
    int8.update_quantization_recipe(".*", qtyping.TFLOperationName.BATCH_MATMUL, algorithm_key="no_quantize")
    # It reports sizes on stdout and progress bars on stderr; a command's own output stays its own.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return bytes(int8.quantize().quantized_model)
