"""How a model runs, whatever its weights compute: one frozen spec that every
caller hands to `SpanModel` (training, the pipeline, evaluation, exports and
the benchmarks), and that nothing else changes.

- `scan`: each run of like layers is one scanned body, compiled once; or every
  layer is compiled on its own (the same numbers);
- `remat`: what the backward pass recomputes instead of keeping (`REMAT`);
- `attention`: how attention without dropout is computed: "xla"
  (`jax.nn.dot_product_attention`, which XLA fuses), "cudnn" (cuDNN's flash
  attention, for 16-bit floats on GPUs, which stores no probabilities), or
  "matmul" (scores, softmax and the weighted sum as separate products, as
  BERT's exporters write it, which ONNX Runtime and LiteRT run best);
- `ops`: "xla", or "litert": exact GELU and the embedding lookup as
  composites that LiteRT's converter maps to its own kernels (they have no
  derivative, so only exports trace them).

Inference precision is not here: a product runs in its weights' own dtype
(`jaxqa.models.layers.matmul`), which `jaxqa.precision.prepare` sets, so that
an int8 checkpoint cannot be run as anything but int8.
"""

import dataclasses

import jax

# What the backward pass recomputes instead of keeping (`Execution.remat`):
# nothing; attention's probabilities (the (B, N, T, T) tensors) from its
# queries, keys and values; everything but the outputs of the layers' matrix
# products with weights (tagged `MATMUL`): attention, norms, activations; or
# each whole layer from its input.
REMAT = ("none", "attention", "matmuls", "layer")
MATMUL = "matmul"
ATTENTION = ("xla", "cudnn", "matmul")
OPS = ("xla", "litert")

# The jax.checkpoint policy of each remat that checkpoints whole blocks: what it keeps.
KEEPS = {"matmuls": jax.checkpoint_policies.save_only_these_names(MATMUL), "layer": None}


@dataclasses.dataclass(frozen=True)
class Execution:
    """How the encoder runs (see the module's docstring)."""

    scan: bool = True
    remat: str = "none"
    attention: str = "xla"
    ops: str = "xla"

    def __post_init__(self):
        for field, choices in (("remat", REMAT), ("attention", ATTENTION), ("ops", OPS)):
            if getattr(self, field) not in choices:
                raise ValueError(f"{field}={getattr(self, field)!r}: choose one of {', '.join(choices)}")

    @property
    def recomputes_attention(self) -> bool:
        # cuDNN keeps no probabilities of its own: recomputing them is its backward pass.
        return self.remat == "attention" and self.attention != "cudnn"


def for_training(platform: str, bf16: bool, scan: bool, remat: str) -> Execution:
    """Training's execution: cuDNN's attention where a GPU computes in bfloat16."""
    return Execution(scan=scan, remat=remat, attention="cudnn" if platform == "gpu" and bf16 else "xla")


def for_export(fmt: str) -> Execution:
    """What an export traces: every layer on its own (a compact model keeps each
    layer's own shapes), attention as separate products, and for LiteRT its
    own GELU and embedding lookup."""
    return Execution(scan=False, attention="matmul", ops="litert" if fmt == "litert" else "xla")
