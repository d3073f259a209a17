"""SqueezeBERT with a SQuAD span head.

SqueezeBERT is BERT with its position-wise layers replaced by grouped,
kernel-size-1 convolutions. A kernel-size-1 convolution is a matrix product per
position, so here each is a grouped matrix product on the (B, T, D) layout,
which XLA lowers to dot products rather than convolutions.

It exports the names every family module does (`jaxqa.models`).
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name

from jaxqa.models import ConfigError, HFNames, hf_config, layers
from jaxqa.models.execution import MATMUL
from jaxqa.models.layers import Embeddings as Embeddings  # the embeddings BERT and SqueezeBERT share

MODEL_TYPE = "squeezebert"
ARCHITECTURE = "SqueezeBertForQuestionAnswering"
HF_PREFIX = "transformer."  # encoder tensors in a Hugging Face checkpoint; the span head is top-level

# The encoder LayerNorms of the reference keep their constructor's default
# epsilon; `layer_norm_eps` reaches only the embeddings LayerNorm.
ENCODER_LAYER_NORM_EPS = 1e-12


@dataclasses.dataclass(frozen=True)
class Config(hf_config.BertFields):
    embedding_size: int = 768
    q_groups: int = 4
    k_groups: int = 4
    v_groups: int = 4
    post_attention_groups: int = 1
    intermediate_groups: int = 4
    output_groups: int = 4

    def __post_init__(self):
        super().__post_init__()
        if self.embedding_size != self.hidden_size:
            # The reference asserts this too: it has no projection between the two widths.
            raise ConfigError(f"embedding_size={self.embedding_size} must equal hidden_size={self.hidden_size}")
        d, m = self.hidden_size, self.intermediate_size
        for field, widths in (
            ("q_groups", (d, d)),
            ("k_groups", (d, d)),
            ("v_groups", (d, d)),
            ("post_attention_groups", (d, d)),
            ("intermediate_groups", (d, m)),
            ("output_groups", (m, d)),
        ):
            groups = getattr(self, field)
            if groups < 1 or any(width % groups for width in widths):
                raise ConfigError(f"{field}={groups} does not divide the layer's widths {widths}")

    def to_hf(self) -> dict[str, Any]:
        return hf_config.to_hf(self, MODEL_TYPE, ARCHITECTURE)


SIZES = {
    "base": Config(),  # squeezebert-uncased: 50.5M parameters with the span head (51.1M with the pooler)
    "tiny": Config(
        hidden_size=64, embedding_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128
    ),
}


class GroupedDense(nn.Module):
    """A kernel-size-1 Conv1d with `groups` groups, on (B, T, in) -> (B, T, features).

    Group g maps input channels [g*I, (g+1)*I) to output channels [g*O, (g+1)*O),
    as PyTorch's grouped Conv1d does; kernel (G, I, O), bias (features,).
    """

    features: int
    groups: int
    out_axis: str  # logical name of the output channels
    std: float
    dtype: layers.Dtype
    param_dtype: layers.Dtype

    @nn.compact
    def __call__(self, x):
        g = self.groups
        kernel = self.param(
            "kernel",
            layers.normal(self.std, ("groups", "kernel_in", self.out_axis)),
            (g, x.shape[-1] // g, self.features // g),
            self.param_dtype,
        )
        bias = self.param("bias", layers.zeros((self.out_axis,)), (self.features,), self.param_dtype)
        x = x.reshape(*x.shape[:-1], g, -1)  # (B, T, G, I)
        scale = layers.quantization_scale(self, kernel)
        if scale is None and kernel.dtype != jnp.uint16:  # float32
            y = jnp.einsum("BTGI,GIO->BTGO", x.astype(self.dtype), kernel.astype(self.dtype))
        else:  # a product per group: XLA's CPU runtime runs batched int8 products slowly, bfloat16 ones not at all
            y = jnp.stack(
                [
                    layers.matmul(x[:, :, i], kernel[i], None if scale is None else scale[i], self.dtype)
                    for i in range(g)
                ],
                axis=2,
            )  # (B, T, G, O)
        y = y.reshape(*y.shape[:2], self.features) + bias.astype(y.dtype)  # (B, T, G * O)
        return checkpoint_name(y, MATMUL)  # what remat "matmuls" keeps


class Layer(layers.Part):
    """One SqueezeBERT layer: (B, T, D) -> (B, T, D)."""

    index: int

    def grouped(self, features: int, groups: int, out_axis: str, name: str) -> GroupedDense:
        cfg = self.config
        return GroupedDense(features, groups, out_axis, cfg.initializer_range, self.dtype, self.param_dtype, name=name)

    @nn.compact
    def __call__(self, x, attention_mask, deterministic: bool):
        cfg = self.config
        dropout = nn.Dropout(cfg.hidden_dropout_prob)

        def heads(name, groups):  # (B, T, D) -> (B, T, N, H)
            y = self.grouped(cfg.hidden_size, groups, "heads", name)(x)
            return y.reshape(*y.shape[:2], cfg.num_attention_heads, cfg.head_dim)

        attention = layers.Attention(cfg.attention_probs_dropout_prob, self.execution)
        queries, keys, values = heads("query", cfg.q_groups), heads("key", cfg.k_groups), heads("value", cfg.v_groups)
        context = attention(queries, keys, values, attention_mask, deterministic)  # (B, T, N * H)
        y = self.grouped(cfg.hidden_size, cfg.post_attention_groups, "embed", "post_attention")(context)
        norm = lambda name: self.layer_norm(ENCODER_LAYER_NORM_EPS, name)
        x = norm("post_attention_layernorm")(dropout(y, deterministic=deterministic) + x)
        y = self.grouped(cfg.intermediate_size, cfg.intermediate_groups, "mlp", "intermediate")(x)
        y = layers.activation(cfg.hidden_act, self.execution)(y)
        y = self.grouped(cfg.hidden_size, cfg.output_groups, "embed", "output")(y)
        return norm("output_layernorm")(dropout(y, deterministic=deterministic) + x)


def hf_export_extras(config: Config) -> dict[str, np.ndarray]:
    """The pooler that `SqueezeBertForQuestionAnswering` owns but never uses for spans.

    Initialised as the reference initialises it, from a fixed seed so that
    exports are reproducible.
    """
    d = config.hidden_size
    rng = np.random.default_rng(0)
    return {
        f"{HF_PREFIX}pooler.dense.weight": (rng.standard_normal((d, d)) * config.initializer_range).astype(np.float32),
        f"{HF_PREFIX}pooler.dense.bias": np.zeros((d,), np.float32),
    }


def forward_flops(cfg: Config, s: int) -> int:
    """Matrix-multiply FLOPs of one forward pass over one sequence of `s` tokens."""
    d, m = cfg.hidden_size, cfg.intermediate_size
    layer = (
        layers.dense_flops(s, d, d, cfg.q_groups)
        + layers.dense_flops(s, d, d, cfg.k_groups)
        + layers.dense_flops(s, d, d, cfg.v_groups)
        + layers.attention_flops(s, d)
        + layers.dense_flops(s, d, d, cfg.post_attention_groups)
        + layers.dense_flops(s, d, m, cfg.intermediate_groups)
        + layers.dense_flops(s, m, d, cfg.output_groups)
    )
    return cfg.num_hidden_layers * layer + layers.dense_flops(s, d, 2)  # span head


ATTENTION_DROPOUT = "attention_probs_dropout_prob"
HF = HFNames(
    prefix=HF_PREFIX,
    dropped=("pooler.", "cls.", "embeddings.position_ids"),
    layer="encoder.layers.{i}",
    layer_modules={
        "query": "attention.query",
        "key": "attention.key",
        "value": "attention.value",
        "post_attention": "post_attention.conv1d",
        "post_attention_layernorm": "post_attention.layernorm",
        "intermediate": "intermediate.conv1d",
        "output": "output.conv1d",
        "output_layernorm": "output.layernorm",
    },
)
