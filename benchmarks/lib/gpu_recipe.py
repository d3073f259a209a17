"""The recipe of the GPU comparisons with PyTorch: AdamW's settings, which both
sides train with (lr 5e-5, eps 1e-6, weight decay 0.01, gradients clipped to
norm 1), each family's named config, and jaxqa's side: the model in bfloat16
compute with float32 weights, and the train step as `jaxqa.train` builds it on
one device."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxqa import models
from jaxqa.models.encoder import SpanModel
from jaxqa.models.execution import Execution
from jaxqa.training import optim
from jaxqa.training.step import make_train_step

LEARNING_RATE = 5e-5
WEIGHT_DECAY = 0.01
ADAM_EPS = optim.EPS
CLIP_NORM = 1.0


def config_of(model_type: str, size: str, attention_dropout: float | None):
    """The family's named config, with attention's dropout rate replaced unless None."""
    fam = models.family(model_type)
    config = fam.sizes[size]
    return (
        config
        if attention_dropout is None
        else dataclasses.replace(config, **{fam.attention_dropout: attention_dropout})
    )


def jaxqa_model(
    model_type: str, size: str, execution: Execution = Execution(), attention_dropout: float | None = None
) -> SpanModel:
    return SpanModel(
        config_of(model_type, size, attention_dropout),
        dtype=jnp.bfloat16,
        param_dtype=jnp.float32,
        execution=execution,
    )


def jaxqa_train_step(model: nn.Module):
    """(AdamW, jitted train step) as `jaxqa.train` builds them, on one device."""
    tx = optim.build("adamw", optax.constant_schedule(LEARNING_RATE), WEIGHT_DECAY, clip_norm=CLIP_NORM)
    return tx, jax.jit(make_train_step(model, tx, seed=0), donate_argnums=0)
