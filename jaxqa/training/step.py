"""The training step: span loss (and, with a teacher, the distillation loss;
with pruning, the model's pruned weights zeroed and the scores' penalty),
gradients summed over micro-batches, one optimizer update, and a guard that
freezes the state at the first non-finite loss or gradient."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxqa.training.pruning import Pruning
from jaxqa.training.state import TrainState

# Logit of padding positions in the losses: out of every softmax, and finite, so
# that the distillation loss's 0 * log 0 terms stay 0.
_PADDING_LOGIT = -1e9


def without_padding(logits, attention_mask):
    """Logits (B, L) with padding positions set far below any real one: the losses
    then ignore padding, so a window's loss does not depend on its padded length
    (the reference QA heads count padding in the softmax)."""
    return jnp.where(attention_mask > 0, logits.astype(jnp.float32), _PADDING_LOGIT)


def span_loss(start_logits, end_logits, start_positions, end_positions):
    """Mean cross-entropy of the start and end positions, as the reference QA heads."""
    start = optax.softmax_cross_entropy_with_integer_labels(start_logits, start_positions)
    end = optax.softmax_cross_entropy_with_integer_labels(end_logits, end_positions)
    return (start.mean() + end.mean()) / 2


def distill_loss(start_logits, end_logits, teacher_start, teacher_end, temperature: float):
    """T² · ½ (KL(start) + KL(end)): the Kullback-Leibler divergence of the student's
    softened start (end) distribution from the teacher's, each over a window's
    positions (B, L), summed over positions and averaged over windows, as the
    reference distillation scripts compute it (`KLDivLoss(reduction="batchmean")`)."""

    def kl(student, teacher):  # (B, L) each
        log_p = jax.nn.log_softmax(teacher / temperature, axis=-1)
        log_q = jax.nn.log_softmax(student / temperature, axis=-1)
        return (jnp.exp(log_p) * (log_p - log_q)).sum(axis=-1).mean()

    return temperature**2 * (kl(start_logits, teacher_start) + kl(end_logits, teacher_end)) / 2


@dataclasses.dataclass(frozen=True)
class Distillation:
    """A frozen teacher (any family) and the weights of the two losses: the step
    minimises alpha · distill_loss + (1 - alpha) · span_loss."""

    teacher: nn.Module
    alpha: float
    temperature: float


def make_train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    seed: int,
    distill: Distillation | None = None,
    prune: Pruning | None = None,
    score_tx: optax.GradientTransformation | None = None,
):
    """`train_step(state, batch, teacher_params)`; teacher_params is {} without
    distillation; `score_tx` updates the pruning scores."""

    def loss_fn(params, scores, batch, rng, teacher_params, step, chosen):
        parts = {}
        if prune is not None:
            parts["penalty_weight"], parts["penalty"] = prune.penalty_term(params, scores, step)
            params, parts["remaining"] = prune.apply(params, scores, chosen)
        inputs = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
        logits = model.apply({"params": params}, *inputs, deterministic=False, rngs={"dropout": rng})
        start, end = (without_padding(x, batch["attention_mask"]) for x in logits)  # (B, L) each
        loss = parts["span_loss"] = span_loss(start, end, batch["start_positions"], batch["end_positions"])
        if distill is not None:
            # The teacher runs in the same program, without dropout, and learns nothing.
            teacher = jax.lax.stop_gradient(distill.teacher.apply({"params": teacher_params}, *inputs))
            teacher_start, teacher_end = (without_padding(x, batch["attention_mask"]) for x in teacher)
            soft = parts["distill_loss"] = distill_loss(start, end, teacher_start, teacher_end, distill.temperature)
            loss = distill.alpha * soft + (1 - distill.alpha) * loss
        return loss + parts.get("penalty", 0.0), parts

    def train_step(state: TrainState, batch: dict, teacher_params: dict):
        # batch: (A, B/A, ...) micro-batches; gradients are summed over them.
        rng = jax.random.fold_in(jax.random.key(seed), state.step)
        trained = (state.params, state.scores)
        # What pruning keeps depends on neither the batch nor the micro-batch: found once.
        chosen = None if prune is None else prune.select(state.params, state.scores, state.step)

        def micro(grads, inputs):
            index, micro_batch = inputs
            (loss, parts), g = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
                *trained, micro_batch, jax.random.fold_in(rng, index), teacher_params, state.step, chosen
            )
            return jax.tree_util.tree_map(jnp.add, grads, g), {"loss": loss, **parts}

        accum = batch["input_ids"].shape[0]
        zeros = jax.tree_util.tree_map(jnp.zeros_like, trained)
        grads, losses = jax.lax.scan(micro, zeros, (jnp.arange(accum), batch))
        grads, score_grads = jax.tree_util.tree_map(lambda g: g / accum, grads)
        losses = {key: value.mean() for key, value in losses.items()}
        grad_norm = optax.tree.norm(grads)
        new_state = _update(state, grads, score_grads, losses["loss"], grad_norm, tx, score_tx)
        return new_state, {**losses, "grad_norm": grad_norm}

    return train_step


def _update(
    state: TrainState,
    grads: dict,
    score_grads: dict | None,
    loss: jax.Array,
    grad_norm: jax.Array,
    tx: optax.GradientTransformation,
    score_tx: optax.GradientTransformation | None,
) -> TrainState:
    """The state after one update of the parameters (and the pruning scores) by
    their gradients; a non-finite loss or gradient freezes it instead."""
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    scores, score_opt_state = state.scores, state.score_opt_state
    if scores is not None:
        assert score_tx is not None  # scores come with their optimizer
        score_updates, score_opt_state = score_tx.update(score_grads, score_opt_state, scores)
        scores = optax.apply_updates(scores, score_updates)
    # A non-finite loss freezes the state at the last good step and records where it happened.
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(optax.tree.norm(score_grads))
    ok = finite & (state.bad_step < 0)
    keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, old)
    return TrainState(
        step=state.step + ok.astype(jnp.int32),
        params=keep(params, state.params),
        opt_state=keep(opt_state, state.opt_state),
        bad_step=jnp.where((state.bad_step < 0) & ~finite, state.step, state.bad_step),
        scores=keep(scores, state.scores),
        score_opt_state=keep(score_opt_state, state.score_opt_state),
    )
