"""One span model for every family: embeddings, the layer stack, the span head.

`SpanModel(config)` takes any family's config (`jaxqa.models.Family`); the
family brings its embeddings and its layer, and this module runs them the same
way for all, as its `Execution` says (`jaxqa.models.execution`).

Parameters are `embeddings/...`, `layers/{a}_to_{b}/...` (each run of like
layers stacked, `jaxqa.models.stacking`) and `qa_outputs/...`. Files hold one
layer per name (`layer_{i}/...`): `per_layer` and `stacked` convert at that boundary.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from jaxqa import models
from jaxqa.models.execution import Execution
from jaxqa.models.layers import Dtype, span_head, span_logits
from jaxqa.models.stacking import Repeated, apply

LAYERS = Repeated("layers", "layer", "layers")


class SpanModel(nn.Module):
    """An encoder and its span head: token ids, attention mask and token types,
    each (B, T), -> start, end logits (B, T) float32. Windows are right-padded."""

    config: Any
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    execution: Execution = Execution()

    @property
    def family(self) -> models.Family:
        return models.family_of(self.config)

    def setup(self):
        head_dropout = getattr(self.config, self.family.head_dropout) if self.family.head_dropout else 0.0
        self.head_dropout = nn.Dropout(head_dropout)
        self.qa_outputs = span_head(self.config.initializer_range, self.param_dtype)

    @nn.compact
    def encode(self, input_ids, attention_mask, token_type_ids, deterministic: bool = True):
        """The last hidden states, (B, T, D)."""
        cfg, fam, ex = self.config, self.family, self.execution
        x = fam.embeddings(cfg, self.dtype, self.param_dtype, ex, name="embeddings")(
            input_ids, token_type_ids, deterministic
        )
        layers = [self.layer(i) for i in range(cfg.num_hidden_layers)]
        keys = None
        if not deterministic:  # layer i drops out with its own key, scanned or not
            keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(self.make_rng("dropout"), jnp.arange(len(layers)))
        return apply(self, LAYERS, layers, x, attention_mask, deterministic, execution=ex, keys=keys)

    def span(self, hidden):
        """Start and end logits of hidden states (B, T, D): the span head alone,
        which `init(..., method="span")` initialises as the whole model would."""
        return span_logits(self.qa_outputs, hidden)

    def __call__(self, input_ids, attention_mask, token_type_ids, deterministic: bool = True):
        hidden = self.encode(input_ids, attention_mask, token_type_ids, deterministic)
        return span_logits(self.qa_outputs, self.head_dropout(hidden, deterministic=deterministic))

    def layer(self, index: int) -> nn.Module:
        """Layer `index`, unbound, named as its parameters are in files (which names it in profiles and the HLO)."""
        return self.family.layer(
            self.config, self.dtype, self.param_dtype, self.execution, index, parent=None, name=f"layer_{index}"
        )

    # Inference one part at a time, each over its own parameters as files hold
    # them (`models.Forward` runs them), without dropout.

    def embedded(self, embeddings: dict, input_ids, token_type_ids):
        """The embeddings' output (B, T, D) of windows (B, T), over `params["embeddings"]`."""
        part = self.family.embeddings(self.config, self.dtype, self.param_dtype, self.execution, parent=None)
        return part.apply({"params": embeddings}, input_ids, token_type_ids, True)

    def layer_output(self, index: int, layer: dict, x, attention_mask):
        """x (B, T, D) after layer `index`, over `layer`, one layer's parameters as
        `per_layer` gives them (blocks the layer repeats one per name)."""
        return self.layer(index).apply({"params": _blocks_stacked(self.config, layer)}, x, attention_mask, True)

    def span_output(self, qa_outputs: dict, hidden):
        """Start and end logits (B, T) of hidden states (B, T, D), over `params["qa_outputs"]`."""
        return self.apply({"params": {"qa_outputs": qa_outputs}}, hidden, method="span")

    def layer_runs(self, params: dict) -> list[tuple[int, int]]:
        """(first layer, layers) of each run of like layers in `params`, in order."""
        return [(first, length) for first, length, _ in LAYERS.runs(params)]

    def per_layer(self, params: dict) -> dict:
        """`per_layer(self.config, params)`, for those that hold the module alone."""
        return per_layer(self.config, params)

    def stacked(self, params: dict) -> dict:
        """`stacked(self.config, params)`, for those that hold the module alone."""
        return stacked(self.config, params)


def per_layer(config, params: dict) -> dict:
    """`params` as files hold them: one `layer_{i}` per layer, and inside it one
    name per block the layer repeats."""

    def blocks(layer):
        for repeated in models.family_of(config).layer_blocks:
            layer = repeated.unstack(layer)
        return layer

    return LAYERS.unstack(params, blocks)


def stacked(config, params: dict) -> dict:
    """Parameters one layer per name (`per_layer`'s form) as the model holds them."""
    return LAYERS.stack(params, functools.partial(_blocks_stacked, config))


def _blocks_stacked(config, layer: dict) -> dict:
    for repeated in models.family_of(config).layer_blocks:
        layer = repeated.stack(layer)
    return layer


def file_shapes(config) -> dict[str, jax.ShapeDtypeStruct]:
    """Shape and dtype of each parameter of the model of `config`, by its name in
    files ("layer_0/query/kernel"), allocating nothing."""
    abstract = nn.meta.unbox(models.abstract_params(SpanModel(config)))
    return traverse_util.flatten_dict(jax.eval_shape(functools.partial(per_layer, config), abstract), sep="/")
