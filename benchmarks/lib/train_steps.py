"""Fresh train states and compiled train steps as `jaxqa.train` builds them:
its compute dtype and device mesh, LAMB, random weights, and a step ready to
time."""

from typing import TYPE_CHECKING

import jax

if TYPE_CHECKING:
    import flax.linen as nn
    import optax
    from jax.sharding import Mesh

    from jaxqa.training.pruning import Pruning
    from jaxqa.training.state import TrainState


def compute_dtype():
    """float32 on CPUs, bfloat16 on accelerators, as `jaxqa.train` computes."""
    import jax.numpy as jnp

    return jnp.float32 if jax.devices()[0].platform == "cpu" else jnp.bfloat16


def device_mesh() -> "Mesh":
    """Every device on the data axis, as `jaxqa.train` lays them out by default."""
    from jaxqa import sharding

    return sharding.make_mesh(sharding.parse_mesh(None, jax.device_count()))


def lamb_schedule() -> "optax.Schedule":
    """The benchmarks' learning rate: up to 1e-3 over 10 steps, down to 0 at step 1000."""
    from jaxqa.training import optim

    return optim.schedule(1e-3, 10, 1000)


def lamb() -> "optax.GradientTransformation":
    """LAMB as `jaxqa.train` builds it (weight decay 0.01), on `lamb_schedule()`."""
    from jaxqa.training import optim

    return optim.build("lamb", lamb_schedule(), 0.01)


def random_params(model: "nn.Module", seed: int = 0) -> dict:
    """`model`'s freshly initialised parameters, unboxed."""
    import flax.linen as nn

    from jaxqa import models

    return nn.meta.unbox(models.init_params(model, jax.random.key(seed)))


def train_state(
    model: "nn.Module",
    tx: "optax.GradientTransformation",
    prune: "Pruning | None" = None,
    score_tx: "optax.GradientTransformation | None" = None,
) -> "TrainState":
    """A fresh train state of `model` with random weights (seed 0), and the
    pruning scores of `prune` where given, trained by `score_tx`."""
    from jaxqa.training.state import TrainState

    params = random_params(model)
    return TrainState.create(params, tx, prune.init_scores(params) if prune else None, score_tx)


def stepper(student: "nn.Module", teacher: "nn.Module | None", batch: dict, prune: "Pruning | None" = None):
    """A function that runs one compiled LAMB train step of `student` on `batch`
    (distilled from `teacher`, pruned by `prune`, where given) and waits for it;
    warmed up once."""
    from jaxqa.training import optim
    from jaxqa.training.step import Distillation, make_train_step

    tx, score_tx = lamb(), optim.scores(lamb_schedule())
    state = train_state(student, tx, prune, score_tx)
    distill = teacher_params = None
    if teacher is not None:
        distill = Distillation(teacher, 0.5, 2.0)
        teacher_params = random_params(teacher, seed=1)
    step = jax.jit(
        make_train_step(student, tx, seed=0, distill=distill, prune=prune, score_tx=score_tx), donate_argnums=0
    )
    compiled = step.lower(state, batch, teacher_params or {}).compile()
    holder = {"state": state}

    def run():
        holder["state"], metrics = compiled(holder["state"], batch, teacher_params or {})
        jax.block_until_ready(metrics)

    run()  # warm-up
    return run
