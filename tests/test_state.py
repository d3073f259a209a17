"""The train state's pure pieces: how it is made, laid out on the mesh, and the
signal handlers a run scopes to itself."""

import os
import signal

import flax.linen as nn
import jax
import optax
import pytest

from jaxqa import models, sharding, train
from jaxqa.models import bert
from jaxqa.models.encoder import SpanModel
from jaxqa.training import optim, pruning
from jaxqa.training.state import TrainState, shardings


def tiny_state(method: str):
    """(model, parameters, state, optimizers) of a tiny BERT pruned by `method`."""
    model = SpanModel(bert.SIZES["tiny"])
    params = nn.meta.unbox(models.init_params(model, jax.random.key(0)))
    prune = pruning.Pruning(method, 0.5, 10, 1, 1.0, 2.0, 400.0, 16)
    tx = optim.build("lamb", optim.schedule(1e-3, 1, 10), 0.01)
    score_tx = optim.scores(optim.schedule(1e-2, 1, 10))
    state = TrainState.create(params, tx, prune.init_scores(params), score_tx)
    return model, params, state, tx, score_tx


def test_create_starts_at_step_zero_with_fresh_optimizer_states():
    model = SpanModel(bert.SIZES["tiny"])
    params = nn.meta.unbox(models.init_params(model, jax.random.key(0)))
    tx = optim.build("adamw", optim.schedule(1e-3, 1, 10), 0.01)
    state = TrainState.create(params, tx)
    assert int(state.step) == 0 and int(state.bad_step) == -1 and state.scores is None
    assert jax.tree_util.tree_structure(state.opt_state) == jax.tree_util.tree_structure(tx.init(params))
    assert int(TrainState.create(params, tx, step=7).step) == 7


@pytest.mark.parametrize("method", ["movement", "hybrid"])
def test_moments_follow_their_parameters_and_scores_their_kernels(method):
    model, _, state, tx, score_tx = tiny_state(method)
    mesh = sharding.make_mesh(sharding.parse_mesh(None, 1))
    params_sh = sharding.param_shardings(models.abstract_params(model), mesh)
    replicated = sharding.replicated(mesh)
    laid_out = shardings(jax.eval_shape(lambda: state), params_sh, replicated, tx, score_tx)
    assert laid_out.step == replicated and laid_out.bad_step == replicated
    assert laid_out.params is params_sh
    # Adam's first moment of each parameter sits where the parameter does.
    mu = optax.tree_utils.tree_get(laid_out.opt_state, "mu")
    assert jax.tree_util.tree_structure(mu) == jax.tree_util.tree_structure(params_sh)
    assert mu["layers"]["0_to_1"]["query"]["kernel"] == params_sh["layers"]["0_to_1"]["query"]["kernel"]
    if method == "movement":  # a score per weight: laid out as its kernel
        assert laid_out.scores["0_to_1"]["query"] == params_sh["layers"]["0_to_1"]["query"]["kernel"]
    else:  # block and unit scores are small: replicated
        assert laid_out.scores["0_to_1"]["query"] == replicated
        assert laid_out.scores["0_to_1"]["feed_forward"] == replicated
    score_mu = optax.tree_utils.tree_get(laid_out.score_opt_state, "mu")
    assert score_mu == laid_out.scores


def test_a_run_catches_sigterm_and_sigint_and_gives_the_handlers_back():
    def mine(signum, frame):
        raise AssertionError("not while the run catches it")

    before = signal.signal(signal.SIGTERM, mine)
    try:
        with train.signals_caught() as stop:
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.signal == signal.SIGTERM
        assert signal.getsignal(signal.SIGTERM) is mine
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGTERM, before)
