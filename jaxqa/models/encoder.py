"""One span model for every family: embeddings, the layer stack, the span head.

`SpanModel(config)` takes any family's config (`jaxqa.models.Family`); the
family brings its embeddings and its layer, and this module runs them the same
way for all: runs of like layers as one scanned body, rematerialised as
`Execution` says (`jaxqa.models.stacking`).

Parameters are `embeddings/...`, `layer_{i}/...` and `qa_outputs/...`. A model
also runs them with runs of like layers stacked ahead of time
(`runtime_params`), as training and a loaded model hold them.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxqa import models
from jaxqa.models.layers import Dtype, span_head, span_logits
from jaxqa.models.stacking import Execution, Repeated, apply

LAYERS = Repeated("layer")


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
        cfg, fam = self.config, self.family
        x = fam.embeddings(cfg, self.dtype, self.param_dtype, name="embeddings")(
            input_ids, token_type_ids, deterministic
        )
        # Unbound, named as their parameters (which names them in profiles and the HLO).
        layers = [
            fam.layer(cfg, i, self.dtype, self.param_dtype, self.execution, parent=None, name=f"layer_{i}")
            for i in range(cfg.num_hidden_layers)
        ]
        keys = None
        if not deterministic:  # layer i drops out with its own key, scanned or not
            keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(self.make_rng("dropout"), jnp.arange(len(layers)))
        return apply(
            self,
            LAYERS,
            layers,
            x,
            attention_mask,
            deterministic,
            scan=self.execution.scan,
            keys=keys,
            remat=self.execution.remat,
        )

    def span(self, hidden):
        """Start and end logits of hidden states (B, T, D): the span head alone,
        which `init(..., method="span")` initialises as the whole model would."""
        return span_logits(self.qa_outputs, hidden)

    def __call__(self, input_ids, attention_mask, token_type_ids, deterministic: bool = True):
        hidden = self.encode(input_ids, attention_mask, token_type_ids, deterministic)
        return span_logits(self.qa_outputs, self.head_dropout(hidden, deterministic=deterministic))


def runtime_params(model: SpanModel, params: dict) -> dict:
    """`params` as `model` runs them without copying them: each run of like layers
    (and the blocks they repeat) stacked when it scans, as they are when it does
    not; stacked parameters come back as they are. Training holds its weights
    so, and a loaded model runs them so."""
    if not model.execution.scan:
        return params
    params = dict(params)
    for blocks in models.family_of(model.config).layer_blocks:
        params = {key: blocks.stack(value) if LAYERS.blocks({key: value}) else value for key, value in params.items()}
    return LAYERS.stack(params)


def canonical_params(config, params: dict) -> dict:
    """One `layer_{i}` per layer again, from parameters `runtime_params` stacked."""
    params = LAYERS.unstack(params)
    for blocks in models.family_of(config).layer_blocks:
        params = {key: blocks.unstack(value) if LAYERS.blocks({key: value}) else value for key, value in params.items()}
    return params
