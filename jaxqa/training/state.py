"""The train state: what a run carries from step to step, how it is made and
how it is sharded over the mesh (a run's `Layout`), and the model a state
stands for. Its parameters, the optimizer's moments of them and the pruning
scores are laid out as the model holds its parameters (runs of like layers
stacked, `jaxqa.models.stacking`), in memory and in the run folder's
checkpoints alike."""

import dataclasses
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding

from jaxqa import models, sharding
from jaxqa.models.encoder import SpanModel
from jaxqa.training.plan import Plan


@struct.dataclass
class TrainState:
    step: jax.Array  # () int32: optimizer steps taken
    params: dict
    opt_state: optax.OptState  # its moments laid out as the parameters
    bad_step: jax.Array  # () int32: first step whose loss or gradient was not finite; -1 if none
    scores: dict | None = None  # pruning scores (see `pruning`); None when not pruning or by magnitude
    score_opt_state: optax.OptState | None = None

    @classmethod
    def create(
        cls,
        params: dict,
        tx: optax.GradientTransformation,
        scores: dict | None = None,
        score_tx: optax.GradientTransformation | None = None,
        step: int = 0,
    ) -> "TrainState":
        """The state before optimizer step `step`: the optimizer's (and the
        scores' optimizer's) fresh state for `params` (and `scores`)."""
        return cls(
            step=jnp.asarray(step, jnp.int32),
            params=params,
            opt_state=tx.init(params),
            bad_step=jnp.full((), -1, jnp.int32),
            scores=scores,
            score_opt_state=None if scores is None or score_tx is None else score_tx.init(scores),
        )


def shardings(
    abstract: TrainState,
    param_shardings: dict,
    replicated: NamedSharding,
    tx: optax.GradientTransformation,
    score_tx: optax.GradientTransformation | None = None,
) -> TrainState:
    """Where each leaf of a state shaped as `abstract` lives: the parameters and
    the optimizers' moments of them as `param_shardings` lays out the
    parameters; a pruning score of one weight each as its kernel; block and
    unit scores and every scalar `replicated`."""
    scores = None
    if abstract.scores is not None:
        runs, run_shardings = abstract.params["layers"], param_shardings["layers"]
        scores = {
            run: {
                name: run_shardings[run][name]["kernel"]
                if name in runs[run] and score.shape == runs[run][name]["kernel"].shape
                else replicated
                for name, score in named.items()
            }
            for run, named in abstract.scores.items()
        }

    def moments(transform, opt_state, laid_out):
        return optax.tree_utils.tree_map_params(
            transform, lambda _, sh: sh, opt_state, laid_out, transform_non_params=lambda _: replicated
        )

    return TrainState(
        step=replicated,  # type: ignore[arg-type]  # a tree of shardings shaped as the state
        params=param_shardings,
        opt_state=moments(tx, abstract.opt_state, param_shardings),
        bad_step=replicated,  # type: ignore[arg-type]
        scores=scores,
        score_opt_state=None if scores is None else moments(score_tx, abstract.score_opt_state, scores),
    )


@dataclasses.dataclass(frozen=True)
class Layout:
    """How a run's state is laid out: its shape, the mesh, and where on it each leaf lives."""

    mesh: Mesh
    fsdp: bool  # weights sharded over the data axis too
    init: Callable[[dict], TrainState]  # parameters -> the state before the first step
    abstract: TrainState
    state_sh: TrainState
    param_sh: dict

    def shardings_of(self, module: SpanModel) -> dict:
        """Where the parameters of `module` (the student, or a teacher beside it) live."""
        return sharding.param_shardings(models.abstract_params(module), self.mesh, self.fsdp)


def lay_out_state(module: SpanModel, plan: Plan, mesh: Mesh, fsdp: bool) -> Layout:
    """The layout of the state that trains `module` as `plan` says, over `mesh`."""
    boxed = models.abstract_params(module)
    param_sh = sharding.param_shardings(boxed, mesh, fsdp)

    def init(params: dict) -> TrainState:
        scores = plan.prune.init_scores(params) if plan.prune else None
        return TrainState.create(params, plan.tx, scores, plan.score_tx)

    abstract = jax.eval_shape(init, nn.meta.unbox(boxed))
    state_sh = shardings(abstract, param_sh, sharding.replicated(mesh), plan.tx, plan.score_tx)
    return Layout(mesh, fsdp, init, abstract, state_sh, param_sh)


def model_of(plan: Plan, layout: Layout) -> Callable[[TrainState], tuple[dict, float]]:
    """The model a state stands for: (its parameters, pruned as the schedule
    says at the state's step; the share of weights kept)."""
    prune = plan.prune
    if prune is None:
        return lambda state: (state.params, 1.0)

    def pruned(state: TrainState):
        return prune.apply(state.params, state.scores, prune.select(state.params, state.scores, state.step))

    return jax.jit(pruned, out_shardings=(layout.param_sh, sharding.replicated(layout.mesh)))
