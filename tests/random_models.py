"""Random-weight models that need neither torch nor the network: every
family's tiny model, a compact BERT with layers of different shapes (and one
with a layer of no heads and a layer of no feed-forward units), and windows
to run them on."""

import functools

import flax.linen as nn
import jax
import numpy as np

from jaxqa import models
from jaxqa.models import bert, compact
from jaxqa.models.encoder import SpanModel, per_layer, stacked

# A small BERT with a head pruned, that compaction and the exports cut further.
COMPACT = bert.Config(
    vocab_size=100,
    hidden_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=96,
    pruned_heads=((1, (2,)),),
)


def random_params(config, seed=0):
    """Fresh parameters with random (non-zero) biases everywhere, as writable NumPy
    arrays, one layer per name (`layer_{i}`, as files hold them)."""
    params = jax.device_get(nn.meta.unbox(models.init_params(SpanModel(config), jax.random.key(seed))))
    params = jax.tree_util.tree_map(np.array, per_layer(config, params))
    rng = np.random.default_rng(seed)
    for i in range(config.num_hidden_layers):
        for leaves in params[f"layer_{i}"].values():
            leaves["bias"] = rng.normal(size=leaves["bias"].shape).astype(np.float32)
    return params


def compact_model(empty: bool = False):
    """COMPACT with some heads and units removed: layers of different shapes;
    `empty`: every head of layer 0 and every unit of layer 2, layers that
    compact to 0 heads and 0 feed-forward units."""
    params = random_params(COMPACT)
    params["layer_0"]["attention_output"]["kernel"][: 64 if empty else 16] = 0  # head 0 (or all 4) of layer 0
    params["layer_2"]["intermediate"]["kernel"][:, : 96 if empty else 40] = 0  # 40 (or all 96) units of layer 2
    return compact.compact(COMPACT, stacked(COMPACT, params))


# Each family's tiny model, and the compact ones.
FAMILY_MODELS = (*models.MODEL_TYPES, "compact-bert", "compact-bert-empty")


@functools.cache
def family_model(name: str):
    """(config, params) of a model of `FAMILY_MODELS`, made when first asked for
    (not while tests are collected)."""
    if name.startswith("compact-bert"):
        return compact_model(empty=name == "compact-bert-empty")
    config = models.family(name).sizes["tiny"]
    return config, jax.device_get(nn.meta.unbox(models.init_params(SpanModel(config), jax.random.key(1))))


def windows(vocab_size: int, batch: int, length: int, seed: int = 0):
    """Right-padded windows of a question and a context: ids, mask, token types, (B, T) int32."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab_size, (batch, length)).astype(np.int32)
    mask = np.ones((batch, length), np.int32)
    mask[1:, length // 2 + 1 :] = 0  # every row but the first padded
    types = np.zeros((batch, length), np.int32)
    types[:, length // 3 :] = 1
    return ids * mask, mask, types * mask
