"""Compact BERT models: a pruned model's zeros taken out of its shapes.

Pure: parameters as the model holds them in, and out; the surgery works on
float32 NumPy copies of each layer (`encoder.per_layer`). `compact` removes every attention head and
every feed-forward unit that no longer changes the output, exactly:

- a head whose rows of the attention output are all zero adds nothing;
- a head whose value columns are all zero adds a constant: each row of its
  attention weights sums to 1, so its context is its value bias, whose image
  under the attention output is folded into that layer's output bias;
- likewise a feed-forward unit whose output row is zero adds nothing, and one
  whose input column is zero adds activation(its bias) times its output row,
  folded into the output bias.

What is left is an ordinary BERT config with fewer heads (`pruned_heads`) and
per-layer feed-forward widths (`intermediate_sizes`). `padded` goes back to
the full shape, with zero heads and units, for `transformers` (which, since
version 5, holds neither removed heads nor per-layer widths).
"""

import dataclasses

import flax.linen as nn
import jax
import numpy as np

from jaxqa import models
from jaxqa.models import bert
from jaxqa.models.encoder import SpanModel, per_layer, stacked
from jaxqa.models.layers import ACTIVATIONS


def compact(config: bert.Config, params: dict) -> tuple[bert.Config, dict]:
    """(config, parameters) without the heads and feed-forward units that add nothing
    but a constant; the logits are the same up to float32 rounding."""
    head_dim, pruned = config.head_dim, dict(config.pruned_heads)
    params = per_layer(config, params)
    all_pruned, widths = [], []
    for i in range(config.num_hidden_layers):
        layer = _float32_copy(params[f"layer_{i}"])
        heads = [h for h in range(config.num_attention_heads) if h not in pruned.get(i, ())]  # original numbers
        out = layer["attention_output"]
        value = layer["value"]["kernel"].reshape(config.hidden_size, len(heads), head_dim)  # (D, N, H)
        rows = out["kernel"].reshape(len(heads), head_dim, config.hidden_size)  # (N, H, D)
        silent = ~rows.any(axis=(1, 2))
        constant = ~value.any(axis=(0, 2)) & ~silent
        value_bias = layer["value"]["bias"].reshape(len(heads), head_dim)  # (N, H)
        out["bias"] = out["bias"] + np.einsum("nh,nhd->d", value_bias[constant], rows[constant])
        keep = np.repeat(~(silent | constant), head_dim)  # (N * H,)
        for name in ("query", "key", "value"):
            layer[name] = {"kernel": layer[name]["kernel"][:, keep], "bias": layer[name]["bias"][keep]}
        out["kernel"] = out["kernel"][keep]
        removed = tuple(h for h, gone in zip(heads, silent | constant) if gone)
        if removed or i in pruned:
            all_pruned.append((i, tuple(sorted(pruned.get(i, ()) + removed))))

        inner, outer = layer["intermediate"], layer["output"]  # kernels (D, M) and (M, D)
        silent = ~outer["kernel"].any(axis=1)
        constant = ~inner["kernel"].any(axis=0) & ~silent
        act = np.asarray(ACTIVATIONS[config.hidden_act](inner["bias"][constant]), np.float32)
        outer["bias"] = outer["bias"] + act @ outer["kernel"][constant]
        keep = ~(silent | constant)
        layer["intermediate"] = {"kernel": inner["kernel"][:, keep], "bias": inner["bias"][keep]}
        outer["kernel"] = outer["kernel"][keep]
        widths.append(int(keep.sum()))
        params[f"layer_{i}"] = layer
    uniform = len(set(widths)) == 1
    config = dataclasses.replace(
        config,
        pruned_heads=tuple(all_pruned),
        intermediate_size=widths[0] if uniform else config.intermediate_size,
        intermediate_sizes=() if uniform else tuple(widths),
    )
    return config, stacked(config, params)


def padded(config: bert.Config, params: dict) -> tuple[bert.Config, dict]:
    """The same model at full shape, as `transformers` holds BERT: every removed
    head back with zero query, key and value columns and zero output rows, every
    feed-forward layer as wide as the widest with zero units. A zero head's
    context is zero and a zero unit's output row is zero: they add nothing."""
    width = max(config.ffn(i) for i in range(config.num_hidden_layers))
    head_dim, pruned = config.head_dim, dict(config.pruned_heads)
    params = per_layer(config, params)
    for i in range(config.num_hidden_layers):
        layer = _float32_copy(params[f"layer_{i}"])
        kept = [h for h in range(config.num_attention_heads) if h not in pruned.get(i, ())]
        columns = np.concatenate([np.arange(h * head_dim, (h + 1) * head_dim) for h in kept] or [np.zeros(0, int)])
        full = config.hidden_size
        for name in ("query", "key", "value"):
            kernel, bias = np.zeros((full, full), np.float32), np.zeros(full, np.float32)
            kernel[:, columns], bias[columns] = layer[name]["kernel"], layer[name]["bias"]
            layer[name] = {"kernel": kernel, "bias": bias}
        rows = np.zeros((full, full), np.float32)
        rows[columns] = layer["attention_output"]["kernel"]
        layer["attention_output"]["kernel"] = rows
        missing = width - config.ffn(i)
        inner, outer = layer["intermediate"], layer["output"]
        inner["kernel"], inner["bias"] = (
            np.pad(inner["kernel"], ((0, 0), (0, missing))),
            np.pad(inner["bias"], (0, missing)),
        )
        outer["kernel"] = np.pad(outer["kernel"], ((0, missing), (0, 0)))
        params[f"layer_{i}"] = layer
    config = dataclasses.replace(config, pruned_heads=(), intermediate_size=width, intermediate_sizes=())
    return config, stacked(config, params)


def _float32_copy(layer: dict) -> dict:
    """A layer's {module: {leaf: array}} as new dicts of float32 NumPy arrays, whose
    entries can be replaced without touching `layer` (the arrays are not written to)."""
    return {
        name: {leaf: np.asarray(value, np.float32) for leaf, value in leaves.items()} for name, leaves in layer.items()
    }


def report(before: bert.Config, after: bert.Config, seq_len: int = 384) -> dict:
    """Heads and feed-forward units per layer, parameters and forward FLOPs per
    sequence of `seq_len` tokens, before and after compaction."""

    def shape(config):
        module = SpanModel(config)
        count = sum(leaf.size for leaf in jax.tree_util.tree_leaves(nn.meta.unbox(models.abstract_params(module))))
        return {
            "heads": [config.heads(i) for i in range(config.num_hidden_layers)],
            "feed_forward_units": [config.ffn(i) for i in range(config.num_hidden_layers)],
            "parameters": count,
            "flops_per_sequence": bert.forward_flops(config, seq_len),
        }

    return {"seq_len": seq_len, "before": shape(before), "after": shape(after)}


def describe(report: dict) -> str:
    """One line of a `report` (with the share of Linear weights kept, `remaining`, if it has one)."""
    before, after = report["before"], report["after"]
    kept = f"{report['remaining']:.1%} of the encoder's Linear weights kept; " if "remaining" in report else ""
    return (
        f"{kept}heads {sum(before['heads'])} -> {sum(after['heads'])} {after['heads']}, feed-forward units "
        f"{sum(before['feed_forward_units'])} -> {sum(after['feed_forward_units'])} {after['feed_forward_units']}, "
        f"parameters {before['parameters']:,} -> {after['parameters']:,}, FLOPs per {report['seq_len']}-token "
        f"sequence {before['flops_per_sequence'] / 1e9:.2f}G -> {after['flops_per_sequence'] / 1e9:.2f}G"
    )
