"""The encoder families. Each module here exports the same names:

- `MODEL_TYPE`, `ARCHITECTURE`: the Hugging Face `model_type` and QA class name.
- `Config`: frozen dataclass with Hugging Face field names, `from_hf`/`to_hf`.
- `SIZES`: named configs, at least `base` and `tiny`.
- `Model`: Linen module; `(input_ids, attention_mask, token_type_ids, deterministic)`
  -> start, end logits (B, T); `encode` gives the last hidden states (B, T, D).
- `HF_PREFIX`, `HF_DROPPED`, `hf_names(config)`, `hf_export_extras(config)`:
  what conversion to and from Hugging Face checkpoints needs.
"""

import functools
import importlib
from types import ModuleType

import flax.linen as nn
import jax
import jax.numpy as jnp

MODEL_TYPES = ("bert", "squeezebert", "mobilebert")


def family(model_type: str) -> ModuleType:
    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_type {model_type!r} is not supported; jaxqa has {', '.join(MODEL_TYPES)}")
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
