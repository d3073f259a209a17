"""DistilBERT with a SQuAD span head.

BERT distilled to half its depth: no token types (the model takes
`token_type_ids` like the others and ignores them), post-LayerNorm blocks whose
attention output is not dropped out, and positions either learned or the fixed
sinusoidal table (`sinusoidal_pos_embds`). That table is computed here, not
stored: conversion checks a checkpoint's copy against it and export writes it.

Exports what every encoder module does (see `jaxqa.models`).
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxqa.models import hf_config
from jaxqa.models.layers import ACTIVATIONS, ConfigError, Dtype, LayerNorm, attend, attention_flops, check_activation, Dense, dense_flops, gather, normal, prefix, span_head, span_logits, Table

MODEL_TYPE = "distilbert"
ARCHITECTURE = "DistilBertForQuestionAnswering"
HF_PREFIX = "distilbert."  # encoder tensors in a Hugging Face checkpoint; the span head is top-level
HF_DROPPED = ("embeddings.position_ids", "vocab_transform.", "vocab_layer_norm.", "vocab_projector.")
# The reference's LayerNorms all have this epsilon; no config field sets it.
LAYER_NORM_EPS = 1e-12


@dataclasses.dataclass(frozen=True)
class Config:
    vocab_size: int = 30522
    max_position_embeddings: int = 512
    sinusoidal_pos_embds: bool = False
    n_layers: int = 6
    n_heads: int = 12
    dim: int = 768
    hidden_dim: int = 3072
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation: str = "gelu"
    initializer_range: float = 0.02
    qa_dropout: float = 0.1
    seq_classif_dropout: float = 0.2  # of the classification heads; kept so that the config round-trips

    def __post_init__(self):
        check_activation(self.activation, "activation")
        if self.dim % self.n_heads:
            raise ConfigError(f"dim={self.dim} is not a multiple of n_heads={self.n_heads}")

    # The names the other families use, as transformers' `attribute_map` gives them.
    @property
    def hidden_size(self) -> int:
        return self.dim

    @property
    def num_hidden_layers(self) -> int:
        return self.n_layers

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @classmethod
    def from_hf(cls, hf: dict[str, Any]) -> "Config":
        return hf_config.from_hf(cls, hf)

    def to_hf(self) -> dict[str, Any]:
        return hf_config.to_hf(self, MODEL_TYPE, ARCHITECTURE)


SIZES = {
    "base": Config(),  # distilbert-base-uncased, 66M parameters with the span head
    "tiny": Config(n_layers=2, n_heads=4, dim=64, hidden_dim=128),
}


def sinusoidal_table(positions: int, dim: int) -> np.ndarray:
    """(positions, dim) float32: sin at even features, cos at odd ones, as the reference builds it."""
    angle = np.arange(positions)[:, None] / np.power(10000, 2 * (np.arange(dim) // 2) / dim)[None, :]  # float64
    table = np.where(np.arange(dim) % 2 == 0, np.sin(angle), np.cos(angle))
    return table.astype(np.float32)


class Embeddings(nn.Module):
    """Word + position embeddings, LayerNorm and dropout: ids (B, T) -> (B, T, D)."""

    config: Config
    dtype: Dtype
    param_dtype: Dtype

    @nn.compact
    def __call__(self, input_ids, deterministic: bool):
        cfg = self.config
        std = cfg.initializer_range
        words = Table(cfg.vocab_size, cfg.dim, normal(std, ("vocab", "embed")), self.param_dtype, name="word_embeddings")()
        x = gather(words, input_ids, self.dtype)  # (B, T, D)
        length = input_ids.shape[1]
        if cfg.sinusoidal_pos_embds:
            positions = jnp.asarray(sinusoidal_table(length, cfg.dim), self.dtype)[None]  # (1, T, D)
        else:
            table = Table(cfg.max_position_embeddings, cfg.dim, normal(std, ("position", "embed")), self.param_dtype,
                          name="position_embeddings")()
            positions = prefix(table, length, self.dtype)  # (1, T, D)
        x = LayerNorm(LAYER_NORM_EPS, self.dtype, self.param_dtype, name="LayerNorm")(x + positions)
        return nn.Dropout(cfg.dropout)(x, deterministic=deterministic)


class Layer(nn.Module):
    config: Config
    dtype: Dtype
    param_dtype: Dtype

    @nn.compact
    def __call__(self, x, attention_mask, deterministic: bool):
        cfg = self.config
        args = dict(std=cfg.initializer_range, dtype=self.dtype, param_dtype=self.param_dtype)

        def heads(name):  # (B, T, D) -> (B, T, N, H)
            y = Dense(cfg.dim, ("embed", "heads"), name=name, **args)(x)
            return y.reshape(*y.shape[:2], cfg.n_heads, cfg.head_dim)

        context = attend(heads("q_lin"), heads("k_lin"), heads("v_lin"), attention_mask,
                         nn.Dropout(cfg.attention_dropout), deterministic)  # (B, T, D)
        y = Dense(cfg.dim, ("heads", "embed"), name="out_lin", **args)(context)
        x = LayerNorm(LAYER_NORM_EPS, self.dtype, self.param_dtype, name="sa_layer_norm")(y + x)
        y = Dense(cfg.hidden_dim, ("embed", "mlp"), name="lin1", **args)(x)
        y = ACTIVATIONS[cfg.activation](y)
        y = Dense(cfg.dim, ("mlp", "embed"), name="lin2", **args)(y)
        y = nn.Dropout(cfg.dropout)(y, deterministic=deterministic)
        return LayerNorm(LAYER_NORM_EPS, self.dtype, self.param_dtype, name="output_layer_norm")(y + x)


class Model(nn.Module):
    """DistilBERT encoder and span head: token ids (B, T) -> start, end logits (B, T)."""

    config: Config
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        cfg = self.config
        self.embeddings = Embeddings(cfg, self.dtype, self.param_dtype)
        self.layers = [Layer(cfg, self.dtype, self.param_dtype, name=f"layer_{i}") for i in range(cfg.n_layers)]
        self.qa_dropout = nn.Dropout(cfg.qa_dropout)
        self.qa_outputs = span_head(cfg.initializer_range, self.param_dtype)

    def encode(self, input_ids, attention_mask, token_type_ids, deterministic: bool = True):
        """The last hidden states, (B, T, D); `token_type_ids` is ignored (DistilBERT has no token types)."""
        x = self.embeddings(input_ids, deterministic)
        for layer in self.layers:
            x = layer(x, attention_mask, deterministic)
        return x

    def __call__(self, input_ids, attention_mask, token_type_ids, deterministic: bool = True):
        hidden = self.encode(input_ids, attention_mask, token_type_ids, deterministic)
        return span_logits(self.qa_outputs, self.qa_dropout(hidden, deterministic=deterministic))


def hf_names(config: Config) -> dict[str, str]:
    """jaxqa module path -> Hugging Face module name (without `HF_PREFIX`)."""
    names = {"embeddings/word_embeddings": "embeddings.word_embeddings", "embeddings/LayerNorm": "embeddings.LayerNorm"}
    if not config.sinusoidal_pos_embds:
        names["embeddings/position_embeddings"] = "embeddings.position_embeddings"
    for i in range(config.n_layers):
        hf = f"transformer.layer.{i}"
        names |= {
            f"layer_{i}/q_lin": f"{hf}.attention.q_lin",
            f"layer_{i}/k_lin": f"{hf}.attention.k_lin",
            f"layer_{i}/v_lin": f"{hf}.attention.v_lin",
            f"layer_{i}/out_lin": f"{hf}.attention.out_lin",
            f"layer_{i}/sa_layer_norm": f"{hf}.sa_layer_norm",
            f"layer_{i}/lin1": f"{hf}.ffn.lin1",
            f"layer_{i}/lin2": f"{hf}.ffn.lin2",
            f"layer_{i}/output_layer_norm": f"{hf}.output_layer_norm",
        }
    return names


def hf_export_extras(config: Config) -> dict[str, np.ndarray]:
    """Tensors `DistilBertForQuestionAnswering` has and jaxqa does not: none."""
    return {}


def hf_fixed(config: Config) -> dict[str, np.ndarray]:
    """The sinusoidal position table, which the reference stores as a frozen weight and jaxqa computes."""
    if not config.sinusoidal_pos_embds:
        return {}
    return {f"{HF_PREFIX}embeddings.position_embeddings.weight": sinusoidal_table(config.max_position_embeddings, config.dim)}


def forward_flops(cfg: Config, s: int) -> int:
    """Matrix-multiply FLOPs of one forward pass over one sequence of `s` tokens."""
    d, m = cfg.dim, cfg.hidden_dim
    layer = 4 * dense_flops(s, d, d) + attention_flops(s, d) + dense_flops(s, d, m) + dense_flops(s, m, d)
    return cfg.n_layers * layer + dense_flops(s, d, 2)  # span head
