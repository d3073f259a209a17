"""Pieces the encoders share: activations, dense/embedding/norm layers with
logical axis names, and masked multi-head attention.

Every weight is created with logical axis names from one small vocabulary
(`vocab`, `embed`, `heads`, `mlp`, `position`, `type`, `groups`, `kernel_in`,
`classes`, and `bottleneck`: MobileBERT's narrow intra-block width, distinct
from `embed` because its bottleneck kernels map one onto the other);
`jaxqa.sharding` maps them onto a device mesh. Norms, softmax and
logits run in float32 whatever the compute dtype.
"""

import functools
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from jaxqa.models import ConfigError
from jaxqa.models.execution import MATMUL, Execution

Dtype = jnp.dtype


def _gelu_exact(x):
    return jax.nn.gelu(x, approximate=False)


def _gelu_tanh(x):
    return jax.nn.gelu(x, approximate=True)


# The `hidden_act` names of Hugging Face configs, with the same formulas.
ACTIVATIONS: dict[str, Callable] = {
    "gelu": _gelu_exact,
    "gelu_python": _gelu_exact,
    "gelu_new": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "gelu_fast": _gelu_tanh,
    "gelu_accurate": lambda x: 0.5 * x * (1 + jnp.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "relu": jax.nn.relu,
    "relu6": jax.nn.relu6,
    "relu2": lambda x: jnp.square(jax.nn.relu(x)),
    "leaky_relu": functools.partial(jax.nn.leaky_relu, negative_slope=0.01),
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "mish": lambda x: x * jnp.tanh(jax.nn.softplus(x)),
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "linear": lambda x: x,
}


# Composites that LiteRT's converter maps to its own kernels (`Execution.ops`
# "litert"): exact GELU, which otherwise arrives as erf's polynomial spelled out
# in a dozen element-wise ops, and the embedding lookup, whose table int8
# exports then quantize too. They have no derivative: only exports trace them.
_tfl_gelu = jax.lax.composite(lambda x, approximate=False: jax.nn.gelu(x, approximate=approximate), name="tfl.gelu")
_embedding_lookup = jax.lax.composite(lambda ids, table: jnp.take(table, ids, axis=0), name="odml.embedding_lookup")


def activation(name: str, execution: Execution) -> Callable:
    """The activation a config names, as `execution` runs it."""
    if execution.ops == "litert" and ACTIVATIONS[name] is _gelu_exact:
        return lambda x: _tfl_gelu(x, approximate=False)
    return ACTIVATIONS[name]


def check_activation(name: str, field: str = "hidden_act") -> str:
    """`name` if it is an activation jaxqa has; `field` is the config field that named it."""
    if name not in ACTIVATIONS:
        raise ConfigError(f"{field}={name!r} is not supported; choose one of {sorted(ACTIVATIONS)}")
    return name


def normal(std: float, axes: tuple[str | None, ...]):
    return nn.with_logical_partitioning(nn.initializers.normal(std), axes)


def zeros(axes: tuple[str | None, ...]):
    return nn.with_logical_partitioning(nn.initializers.zeros_init(), axes)


def ones(axes: tuple[str | None, ...]):
    return nn.with_logical_partitioning(nn.initializers.ones_init(), axes)


def matmul(x, kernel, kernel_scale, dtype: Dtype):
    """x (..., I) times kernel (I, O): (..., O). How is chosen by the kernel's
    dtype, which `jaxqa.precision` sets for inference:

    - float32 (training, and float32 inference): operands and result in `dtype`,
      accumulated in float32;
    - bfloat16, held as its 16 bits (uint16, see `bfloat16_bits`): bfloat16
      operands, float32 result, the form CPUs with bfloat16 units run fastest
      (a bfloat16 result runs slower than float32 there);
    - int8, with `kernel_scale` (O,) per output channel: x quantized
      symmetrically per row (per token), int32 accumulation, float32 result.
    """
    contract = (((x.ndim - 1,), (0,)), ((), ()))
    if kernel.dtype == jnp.uint16:
        kernel = jax.lax.bitcast_convert_type(kernel, jnp.bfloat16)
    if kernel.dtype == jnp.int8:
        x = x.astype(jnp.float32)
        x_scale = jnp.max(jnp.abs(x), axis=-1, keepdims=True, initial=0.0) / 127  # (..., 1); 0 for no features
        x_int8 = jnp.round(x / jnp.where(x_scale > 0, x_scale, 1)).astype(jnp.int8)
        y = jax.lax.dot_general(x_int8, kernel, contract, preferred_element_type=jnp.int32)
        return y.astype(jnp.float32) * x_scale * kernel_scale
    if kernel.dtype == jnp.bfloat16:
        return jax.lax.dot_general(x.astype(jnp.bfloat16), kernel, contract, preferred_element_type=jnp.float32)
    y = jax.lax.dot_general(x.astype(dtype), kernel.astype(dtype), contract, preferred_element_type=jnp.float32)
    return y.astype(dtype)


class Dense(nn.Module):
    """A Linear layer: kernel (in, out) named by `axes`, bias (out,); an int8
    kernel comes with its `kernel_scale` (out,) (see `matmul`)."""

    features: int
    axes: tuple[str, str]
    std: float
    dtype: Dtype
    param_dtype: Dtype

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", normal(self.std, self.axes), (x.shape[-1], self.features), self.param_dtype)
        bias = self.param("bias", zeros(self.axes[1:]), (self.features,), self.param_dtype)
        scale = quantization_scale(self, kernel)
        y = matmul(x, kernel, scale, self.dtype)
        return checkpoint_name(y + bias.astype(y.dtype), MATMUL)  # what remat "matmuls" keeps


def bfloat16_bits(params):
    """`params` with each bfloat16 leaf held as its 16 bits (uint16), which
    `matmul` takes as the bfloat16 kernel it is: XLA's CPU compiler reads a
    layer's slice of a stacked bfloat16 kernel by converting the whole stack to
    float32 on every call, while bits slice as they are
    (benchmarks/results/encoder_core_latency_cpu.json)."""
    as_bits = lambda leaf: jax.lax.bitcast_convert_type(leaf, jnp.uint16) if leaf.dtype == jnp.bfloat16 else leaf
    return jax.tree_util.tree_map(as_bits, params)


def bfloat16_values(params):
    """The inverse of `bfloat16_bits`: each uint16 leaf as the bfloat16 it holds."""
    as_values = lambda leaf: jax.lax.bitcast_convert_type(leaf, jnp.bfloat16) if leaf.dtype == jnp.uint16 else leaf
    return jax.tree_util.tree_map(as_values, params)


def quantization_scale(module: nn.Module, kernel: jax.Array) -> jax.Array | None:
    """The per-output-channel `kernel_scale` beside an int8 kernel ((I, O) -> (O,),
    (G, I, O) -> (G, O)); None beside a float one."""
    if kernel.dtype != jnp.int8:
        return None
    shape = kernel.shape[:-2] + kernel.shape[-1:]
    return module.param("kernel_scale", nn.initializers.ones_init(), shape, jnp.float32)


class Table(nn.Module):
    """An embedding table, (num, features) in param_dtype, under the parameter name
    `embedding`. The three lookups below read it, each so that its gradient is
    cheap on every backend: a scatter-add into a few rows (token types, positions)
    piles every token of the batch onto them, and GPUs add bfloat16 by
    compare-and-swap, so those run as a slice and a one-hot sum instead."""

    num: int
    features: int
    initializer: Callable
    param_dtype: Dtype

    @nn.compact
    def __call__(self) -> jax.Array:
        return self.param("embedding", self.initializer, (self.num, self.features), self.param_dtype)


def gather(table: jax.Array, ids: jax.Array, dtype: Dtype, execution: Execution) -> jax.Array:
    """Rows of `table` (V, D) at `ids` (B, T): (B, T, D) in `dtype`, gathered before
    the cast so that the gradient's scatter-add runs in the table's float32.
    For LiteRT, its EMBEDDING_LOOKUP, which takes ids in one dimension."""
    if execution.ops == "litert":
        return _embedding_lookup(ids.reshape(-1), table).reshape(*ids.shape, table.shape[1]).astype(dtype)
    return jnp.take(table, ids, axis=0).astype(dtype)


def prefix(table: jax.Array, length: int, dtype: Dtype) -> jax.Array:
    """Rows 0..length-1 of `table` (P, D), as positions 0..T-1 read them: (1, T, D)."""
    return table[None, :length].astype(dtype)


def one_hot_rows(table: jax.Array, ids: jax.Array, dtype: Dtype) -> jax.Array:
    """Rows of a table of a few rows (V, D) at `ids` (B, T): (B, T, D), as the sum
    of its rows weighted one-hot, which is exact and whose gradient is a sum over
    the batch (XLA fuses the (B, T, V, D) product into the sum)."""
    one_hot = jax.nn.one_hot(ids, table.shape[0], dtype=table.dtype)  # (B, T, V)
    return (one_hot[..., None] * table).sum(axis=-2).astype(dtype)


class LayerNorm(nn.Module):
    """LayerNorm over the last axis (logically named `axis`), computed in float32, returned in `dtype`."""

    epsilon: float
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    axis: str = "embed"

    @nn.compact
    def __call__(self, x):
        x = x.astype(jnp.float32)
        mean = x.mean(-1, keepdims=True)
        var = jnp.square(x - mean).mean(-1, keepdims=True)
        return _affine(self, (x - mean) * jax.lax.rsqrt(var + self.epsilon), "scale")


class NoNorm(nn.Module):
    """MobileBERT's replacement for LayerNorm: an elementwise affine map."""

    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    axis: str = "embed"

    @nn.compact
    def __call__(self, x):
        return _affine(self, x.astype(jnp.float32), "weight")


def _affine(norm: LayerNorm | NoNorm, y, gain: str):
    """y (..., F) times a gain plus a bias per feature, in float32, returned in the
    norm's dtype; the norm's parameters `gain` and "bias" (F,), logically named its `axis`."""
    weight = norm.param(gain, ones((norm.axis,)), y.shape[-1:], norm.param_dtype)
    bias = norm.param("bias", zeros((norm.axis,)), y.shape[-1:], norm.param_dtype)
    return (y * weight.astype(jnp.float32) + bias.astype(jnp.float32)).astype(norm.dtype)


class Part(nn.Module):
    """A part of a family's model, its embeddings or a layer: its config (read by
    its Hugging Face field names), the dtypes it computes in and keeps its
    parameters in, and how the model runs. Its methods make the shared layers
    it is built of, in its compact method, named as their parameters."""

    config: Any
    dtype: Dtype
    param_dtype: Dtype
    execution: Execution

    def dense(self, features: int, axes: tuple[str, str], name: str) -> "Dense":
        return Dense(features, axes, self.config.initializer_range, self.dtype, self.param_dtype, name=name)

    def heads(self, x, axes: tuple[str, str], num_heads: int, head_dim: int, name: str):
        """x (B, T, W) projected to attention heads, (B, T, N, H)."""
        y = self.dense(num_heads * head_dim, axes, name)(x)
        return y.reshape(*y.shape[:2], num_heads, head_dim)

    def layer_norm(self, epsilon: float, name: str, axis: str = "embed") -> "LayerNorm":
        return LayerNorm(epsilon, self.dtype, self.param_dtype, axis, name=name)

    def table(self, rows: int, features: int, axis: str, name: str) -> jax.Array:
        """An embedding table (rows, features) of fresh normal values, its rows logically named `axis`."""
        init = normal(self.config.initializer_range, (axis, "embed"))
        return Table(rows, features, init, self.param_dtype, name=name)()


class Embeddings(Part):
    """Word + position + token-type embeddings, LayerNorm and dropout, as BERT and
    SqueezeBERT have them: ids (B, T) -> (B, T, hidden_size)."""

    @nn.compact
    def __call__(self, input_ids, token_type_ids, deterministic: bool):
        cfg, d = self.config, self.config.hidden_size
        words = self.table(cfg.vocab_size, d, "vocab", "word_embeddings")
        positions = self.table(cfg.max_position_embeddings, d, "position", "position_embeddings")
        types = self.table(cfg.type_vocab_size, d, "type", "token_type_embeddings")
        x = (
            gather(words, input_ids, self.dtype, self.execution)
            + prefix(positions, input_ids.shape[1], self.dtype)
            + one_hot_rows(types, token_type_ids, self.dtype)
        )  # (B, T, D)
        x = self.layer_norm(cfg.layer_norm_eps, "LayerNorm")(x)
        return nn.Dropout(cfg.hidden_dropout_prob)(x, deterministic=deterministic)


class Attention(nn.Module):
    """Scaled dot-product attention over right-padded keys: q, k, v (B, T, N, H)
    and attention_mask (B, T), 1 for real tokens, -> (B, T, N * H) in v's dtype.
    Scores and softmax run in float32.

    Without dropout (deterministic, or a rate of 0: inference, evaluation, a
    teacher) it is computed as `execution.attention` says: fused by XLA, by
    cuDNN's flash attention without storing the probabilities, or as separate
    products (`matmul_attention`, for exports). With dropout the probabilities
    are dropped out, as the reference does. `execution.remat` "attention": the
    backward pass recomputes the probabilities from q, k and v instead of
    keeping them.
    """

    rate: float
    execution: Execution

    @nn.compact
    def __call__(self, q, k, v, attention_mask, deterministic: bool):
        if q.shape[2] == 0:  # a pruned layer that lost every head
            return jnp.zeros((*q.shape[:2], 0), v.dtype)
        attend: Callable
        if not deterministic and self.rate > 0:
            attend = functools.partial(
                dropped_out_attention, attention_mask=attention_mask, rate=self.rate, rng=self.make_rng("dropout")
            )
        elif self.execution.attention == "matmul":
            attend = functools.partial(matmul_attention, attention_mask=attention_mask)
        else:
            attend = functools.partial(
                fused_attention, attention_mask=attention_mask, cudnn=self.execution.attention == "cudnn"
            )
        if self.execution.recomputes_attention:
            attend = jax.checkpoint(attend)
        context = attend(q, k, v)  # (B, T, N, H)
        return context.reshape(*context.shape[:2], -1)


def fused_attention(q, k, v, attention_mask, cudnn: bool = False):
    """Attention without dropout, by XLA or cuDNN (16-bit floats on GPUs); (B, T, N, H) -> (B, T, N, H)."""
    if cudnn:
        # Padding as lengths, which cuDNN takes; a filler row of only padding
        # attends to its first position and stays finite.
        lengths = jnp.maximum(attention_mask.sum(axis=-1), 1).astype(jnp.int32)  # (B,)
        return jax.nn.dot_product_attention(q, k, v, key_value_seq_lengths=lengths, implementation="cudnn")
    keep = attention_mask[:, None, None, :].astype(bool)  # (B, 1, 1, S)
    return jax.nn.dot_product_attention(q, k, v, mask=keep)


def matmul_attention(q, k, v, attention_mask):
    """Attention without dropout as BERT's exporters write it, which ONNX Runtime
    and LiteRT know: per (batch, head) the scores q k^T scaled, the padding
    masked by adding float32's lowest, softmax, and the weighted sum of values;
    (B, T, N, H) -> (B, T, N, H)."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    queries = q.transpose(0, 2, 1, 3)  # (B, N, T, H)
    keys = k.transpose(0, 2, 3, 1)  # (B, N, H, S)
    values = v.transpose(0, 2, 1, 3)  # (B, N, S, H)
    bias = jnp.where(attention_mask[:, None, None, :] > 0, 0.0, jnp.finfo(jnp.float32).min)  # (B, 1, 1, S)
    probs = jax.nn.softmax(jnp.matmul(queries, keys) * scale + bias, axis=-1)  # (B, N, T, S)
    return jnp.matmul(probs, values).transpose(0, 2, 1, 3)


def dropped_out_attention(q, k, v, attention_mask, rate: float, rng: jax.Array):
    """Attention whose probabilities are dropped out at `rate`; (B, T, N, H) -> (B, T, N, H)."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    scores = jnp.einsum("BTNH,BSNH->BNTS", q, k, preferred_element_type=jnp.float32) * scale
    keep = attention_mask[:, None, None, :].astype(bool)  # (B, 1, 1, S)
    scores = jnp.where(keep, scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1)
    kept = jax.random.bernoulli(rng, 1 - rate, probs.shape)
    probs = jnp.where(kept, probs / (1 - rate), 0).astype(v.dtype)
    return jnp.einsum("BNTS,BSNH->BTNH", probs, v)


def span_head(std: float, param_dtype: Dtype) -> nn.Dense:
    """The SQuAD head, (B, T, D) -> (B, T, 2), in float32; call `span_logits` on it."""
    return nn.Dense(
        2,
        dtype=jnp.float32,
        param_dtype=param_dtype,
        kernel_init=normal(std, ("embed", "classes")),
        bias_init=zeros(("classes",)),
    )


def span_logits(head: nn.Dense, hidden):
    """Start and end logits, each (B, T) float32, from hidden states (B, T, D)."""
    logits = head(hidden.astype(jnp.float32))
    return logits[..., 0], logits[..., 1]


def dense_flops(s: int, n_in: int, n_out: int, groups: int = 1) -> int:
    """FLOPs of a Linear (or grouped kernel-size-1 convolution) applied to s positions."""
    return 2 * s * n_in * n_out // groups


def attention_flops(s: int, width: int) -> int:
    """FLOPs of the scores (S, S) and the weighted sum of values, all heads together `width` wide."""
    return 4 * s * s * width
