"""The training step: span loss, gradients summed over micro-batches, one
optimizer update, and a guard that freezes the state at the first non-finite
loss or gradient."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct


@struct.dataclass
class TrainState:
    step: jax.Array  # () int32: optimizer steps taken
    params: dict
    opt_state: optax.OptState
    bad_step: jax.Array  # () int32: first step whose loss or gradient was not finite; -1 if none


def span_loss(start_logits, end_logits, start_positions, end_positions):
    """Mean cross-entropy of the start and end positions, as the reference QA heads."""
    start = optax.softmax_cross_entropy_with_integer_labels(start_logits, start_positions)
    end = optax.softmax_cross_entropy_with_integer_labels(end_logits, end_positions)
    return (start.mean() + end.mean()) / 2


def make_train_step(model: nn.Module, tx: optax.GradientTransformation, seed: int):
    def loss_fn(params, batch, rng):
        start, end = model.apply(
            {"params": params}, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
            deterministic=False, rngs={"dropout": rng},
        )
        return span_loss(start, end, batch["start_positions"], batch["end_positions"])

    def train_step(state: TrainState, batch: dict):
        # batch: (A, B/A, ...) micro-batches; gradients are summed over them.
        rng = jax.random.fold_in(jax.random.key(seed), state.step)

        def micro(grads, inputs):
            index, micro_batch = inputs
            loss, g = jax.value_and_grad(loss_fn)(state.params, micro_batch, jax.random.fold_in(rng, index))
            return jax.tree_util.tree_map(jnp.add, grads, g), loss

        accum = batch["input_ids"].shape[0]
        zeros = jax.tree_util.tree_map(jnp.zeros_like, state.params)
        grads, losses = jax.lax.scan(micro, zeros, (jnp.arange(accum), batch))
        grads = jax.tree_util.tree_map(lambda g: g / accum, grads)
        loss, grad_norm = losses.mean(), optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        # A non-finite loss freezes the state at the last good step and records where it happened.
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        ok = finite & (state.bad_step < 0)
        keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, old)
        new_state = TrainState(
            step=state.step + ok.astype(jnp.int32),
            params=keep(params, state.params),
            opt_state=keep(opt_state, state.opt_state),
            bad_step=jnp.where((state.bad_step < 0) & ~finite, state.step, state.bad_step),
        )
        return new_state, {"loss": loss, "grad_norm": grad_norm}

    return train_step
