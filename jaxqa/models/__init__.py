"""The encoder families. Each module here exports the same names:

- `MODEL_TYPE`, `ARCHITECTURE`: the Hugging Face `model_type` and QA class name.
- `Config`: frozen dataclass with Hugging Face field names, `from_hf`/`to_hf`.
- `SIZES`: named configs, at least `base` and `tiny`.
- `Model`: Linen module; `(input_ids, attention_mask, token_type_ids, deterministic)`
  -> start, end logits (B, T); `encode` gives the last hidden states (B, T, D).
- `HF_PREFIX`, `HF_DROPPED`, `hf_names(config)`, `hf_export_extras(config)`,
  `hf_fixed(config)`: what conversion to and from Hugging Face checkpoints
  needs (`convert`).
- `forward_flops(config, seq_len)`: matrix-multiply FLOPs of one forward pass
  over one sequence (the numerator of model FLOPs utilisation). Every Linear
  (and grouped convolution, at 1/groups of the dense cost) counts 2 x inputs x
  outputs per token, attention 4 x S x all-head width per token; lookups,
  norms, activations and softmax are not counted. A training step is 3 times
  this (the backward pass takes two matmuls per forward one).
"""

import functools
import importlib
from types import ModuleType

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxqa.models.layers import ConfigError

MODEL_TYPES = ("bert", "squeezebert", "mobilebert", "distilbert")


def family(model_type: str) -> ModuleType:
    if model_type not in MODEL_TYPES:
        raise ConfigError(f"model_type {model_type!r} is not supported; jaxqa has {', '.join(MODEL_TYPES)}")
    return importlib.import_module(f"jaxqa.models.{model_type}")


def _example_batch():
    ids = jnp.zeros((1, 8), jnp.int32)
    return ids, jnp.ones_like(ids), ids


def init_params(model: nn.Module, rng: jax.Array):
    """Freshly initialised parameters, boxed with their logical axis names."""
    return jax.jit(model.init)(rng, *_example_batch())["params"]


def abstract_params(model: nn.Module):
    """Shapes, dtypes and logical axis names of the parameters, allocating nothing."""
    return jax.eval_shape(functools.partial(init_params, model), jax.random.key(0))


class Forward:
    """A module's jitted forward pass: `(params, input_ids, attention_mask,
    token_type_ids)`, each batch array (B, T), -> start, end logits (B, T) float32.

    `out_sharding` lays the logits out on a mesh (replicated, so that every
    process can read them); `traces` counts the programs compiled, one per
    input shape.
    """

    def __init__(self, module: nn.Module, out_sharding=None):
        self.module = module
        self.traces = 0
        self._jitted = jax.jit(self._traced, out_shardings=out_sharding)

    def _traced(self, params, input_ids, attention_mask, token_type_ids):
        # Python runs this body only when jax traces a new input shape.
        self.traces += 1
        return self.module.apply({"params": params}, input_ids, attention_mask, token_type_ids)

    def __call__(self, params, input_ids, attention_mask, token_type_ids):
        return self._jitted(params, input_ids, attention_mask, token_type_ids)


@functools.cache
def forward(module: nn.Module, out_sharding=None) -> Forward:
    """The shared `Forward` of a module (and output layout), so that every caller
    of the same model (evaluations during training, a loaded checkpoint) compiles
    each shape once per process."""
    return Forward(module, out_sharding)


def check_length(config, length: int, what: str) -> None:
    """Refuses windows of `length` tokens that the model's position table cannot
    hold (past `max_position_embeddings` every logit would be NaN); `what` names
    the flag or argument that asked for them."""
    if length > config.max_position_embeddings:
        raise ConfigError(f"{what} {length}: the model has positions for at most "
                          f"{config.max_position_embeddings} tokens (max_position_embeddings)")
