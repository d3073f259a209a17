"""DistilBERT with a SQuAD span head.

BERT distilled to half its depth: no token types (the model takes
`token_type_ids` like the others and ignores them), post-LayerNorm blocks whose
attention output is not dropped out, and positions either learned or the fixed
sinusoidal table (`sinusoidal_pos_embds`). That table is computed here, not
stored: conversion checks a checkpoint's copy against it and export writes it.

It exports the names every family module does (`jaxqa.models`).
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxqa.models import ConfigError, HFNames, hf_config, layers

MODEL_TYPE = "distilbert"
ARCHITECTURE = "DistilBertForQuestionAnswering"
HF_PREFIX = "distilbert."  # encoder tensors in a Hugging Face checkpoint; the span head is top-level
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
        layers.check_activation(self.activation, "activation")
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


class Embeddings(layers.Part):
    """Word + position embeddings, LayerNorm and dropout: ids (B, T) -> (B, T, D);
    DistilBERT has no token types, so `token_type_ids` is ignored."""

    @nn.compact
    def __call__(self, input_ids, token_type_ids, deterministic: bool):
        cfg, length = self.config, input_ids.shape[1]
        words = self.table(cfg.vocab_size, cfg.dim, "vocab", "word_embeddings")
        x = layers.gather(words, input_ids, self.dtype, self.execution)  # (B, T, D)
        if cfg.sinusoidal_pos_embds:
            positions = jnp.asarray(sinusoidal_table(length, cfg.dim), self.dtype)[None]  # (1, T, D)
        else:
            table = self.table(cfg.max_position_embeddings, cfg.dim, "position", "position_embeddings")
            positions = layers.prefix(table, length, self.dtype)  # (1, T, D)
        x = self.layer_norm(LAYER_NORM_EPS, "LayerNorm")(x + positions)
        return nn.Dropout(cfg.dropout)(x, deterministic=deterministic)


class Layer(layers.Part):
    """One DistilBERT block: (B, T, D) -> (B, T, D)."""

    index: int

    @nn.compact
    def __call__(self, x, attention_mask, deterministic: bool):
        cfg = self.config
        heads = lambda name: self.heads(x, ("embed", "heads"), cfg.n_heads, cfg.head_dim, name)
        attention = layers.Attention(cfg.attention_dropout, self.execution)
        context = attention(heads("q_lin"), heads("k_lin"), heads("v_lin"), attention_mask, deterministic)  # (B, T, D)
        y = self.dense(cfg.dim, ("heads", "embed"), "out_lin")(context)
        x = self.layer_norm(LAYER_NORM_EPS, "sa_layer_norm")(y + x)
        y = self.dense(cfg.hidden_dim, ("embed", "mlp"), "lin1")(x)
        y = layers.activation(cfg.activation, self.execution)(y)
        y = self.dense(cfg.dim, ("mlp", "embed"), "lin2")(y)
        y = nn.Dropout(cfg.dropout)(y, deterministic=deterministic)
        return self.layer_norm(LAYER_NORM_EPS, "output_layer_norm")(y + x)


def hf_fixed(config: Config) -> dict[str, np.ndarray]:
    """The sinusoidal position table, which the reference stores as a frozen weight and jaxqa computes."""
    if not config.sinusoidal_pos_embds:
        return {}
    return {
        f"{HF_PREFIX}embeddings.position_embeddings.weight": sinusoidal_table(
            config.max_position_embeddings, config.dim
        )
    }


def forward_flops(cfg: Config, s: int) -> int:
    """Matrix-multiply FLOPs of one forward pass over one sequence of `s` tokens."""
    d, m = cfg.dim, cfg.hidden_dim
    layer = (
        4 * layers.dense_flops(s, d, d)
        + layers.attention_flops(s, d)
        + layers.dense_flops(s, d, m)
        + layers.dense_flops(s, m, d)
    )
    return cfg.n_layers * layer + layers.dense_flops(s, d, 2)  # span head


ATTENTION_DROPOUT = "attention_dropout"
HEAD_DROPOUT = "qa_dropout"
HF = HFNames(
    prefix=HF_PREFIX,
    dropped=("embeddings.position_ids", "vocab_transform.", "vocab_layer_norm.", "vocab_projector."),
    layer="transformer.layer.{i}",
    layer_modules={
        "q_lin": "attention.q_lin",
        "k_lin": "attention.k_lin",
        "v_lin": "attention.v_lin",
        "out_lin": "attention.out_lin",
        "sa_layer_norm": "sa_layer_norm",
        "lin1": "ffn.lin1",
        "lin2": "ffn.lin2",
        "output_layer_norm": "output_layer_norm",
    },
)
