"""Optimizers for SQuAD fine-tuning: LAMB and AdamW, with BERT's schedule.

Both clip the gradients to a global norm first and use Adam moments with
bias correction, eps outside the square root (m̂ / (√v̂ + eps)). Weight decay is
decoupled (added to the Adam direction, never to the gradient) and LAMB's
layer-wise trust ratio is applied to the same parameters, the ones
`decay_mask` marks. The optimizer state mirrors the parameters' dtype, so
float32 master weights get float32 moments.

A model holds each run of like layers stacked along leading axes
(`jaxqa.models.stacking`); LAMB gives each layer of a run its trust ratio, as
the layers would have one by one, along the axes `layer_axes` names.

Gradient accumulation is not here: the training step sums micro-batch
gradients itself and hands this optimizer one update per global batch.
"""

from typing import Any

import jax
import jax.numpy as jnp
import optax

# Leaf name -> whether the parameter takes weight decay and LAMB's trust ratio.
# Kernels (2-D dense, 3-D grouped) and embeddings do; every bias and the gains
# of LayerNorm (`scale`) and MobileBERT's NoNorm (`weight`) do not. This is
# BERT's and MobileBERT's exclusion list ("LayerNorm", "bias"), whose LAMB
# skips the trust ratio for exactly the parameters it skips decay for: a gain
# or bias vector's norm says nothing about the scale of a layer's weights.
_DECAYED = {"kernel": True, "embedding": True, "bias": False, "scale": False, "weight": False}


def decay_mask(params):
    """A tree shaped like `params`: True where weight decay and the trust ratio apply.

    Raises ValueError on a leaf name the table above does not know, so that a
    new kind of parameter is classified on purpose rather than by default.
    """

    def decayed(path, _):
        name = path[-1].key
        if name not in _DECAYED:
            raise ValueError(f"decay_mask: no rule for parameter {jax.tree_util.keystr(path)!r}")
        return _DECAYED[name]

    return jax.tree_util.tree_map_with_path(decayed, params)


def schedule(learning_rate: float, warmup_steps: int, total_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to `learning_rate`, then linear decay to 0 at `total_steps`.

    The step is optax's update count, 0 for the first update, which therefore
    has learning rate 0 when there is warmup (as in BERT's own schedule).
    """
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(f"need 0 <= warmup_steps < total_steps, got {warmup_steps} and {total_steps}")
    return optax.join_schedules(
        [
            optax.linear_schedule(0.0, learning_rate, warmup_steps),
            optax.linear_schedule(learning_rate, 0.0, total_steps - warmup_steps),
        ],
        boundaries=[warmup_steps],
    )


def scale_by_trust_ratio(layer_axes: Any = None) -> optax.GradientTransformation:
    """Each update scaled by ||w|| / ||update||, or 1 where either norm is 0 (as
    `optax.scale_by_trust_ratio`), with one ratio per layer of a stacked run:
    `layer_axes`, a tree shaped as the parameters (`stacking.layer_axes`), says
    how many leading axes of each leaf are stacked layers, which the norms
    leave out (None: none are)."""

    def update(updates, state, params):
        def scale(u, w, stacked):
            if isinstance(u, optax.MaskedNode):  # left out by `optax.masked`
                return u
            axes = tuple(range(stacked, u.ndim))
            w_norm = jnp.sqrt(jnp.sum(jnp.square(w), axis=axes, keepdims=True))
            u_norm = jnp.sqrt(jnp.sum(jnp.square(u), axis=axes, keepdims=True))
            ratio = jnp.where((w_norm == 0) | (u_norm == 0), 1.0, w_norm / u_norm)
            return u * ratio.astype(u.dtype)

        stacked = jax.tree.map(lambda _: 0, params) if layer_axes is None else layer_axes
        masked = lambda leaf: isinstance(leaf, optax.MaskedNode)
        return jax.tree.map(scale, updates, params, stacked, is_leaf=masked), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


# Adam's moment decays and epsilon, as BERT's and MobileBERT's optimizers have them.
B1, B2, EPS = 0.9, 0.999, 1e-6


def lamb(
    schedule: optax.Schedule, weight_decay: float, clip_norm: float = 1.0, layer_axes: Any = None
) -> optax.GradientTransformation:
    """LAMB (You et al., 2019) with the trust ratio only where `decay_mask` is
    True, one per layer (`scale_by_trust_ratio`'s `layer_axes`).

    Bias correction follows the paper's Algorithm 2 and NVIDIA's LAMB (apex
    FusedLAMB, bias_correction=True). Google's TF LAMB for BERT and MobileBERT
    omits it, which scales the early Adam steps by (1 - b1^t) / √(1 - b2^t):
    3.2 at step 1, about 6.5 near step 10, 1.3 at step 1000; the trust ratio
    hides that for kernels but not for biases and gains. eps=1e-6 is the value
    all three use. `optax.lamb` would scale every parameter by its trust ratio,
    biases and norm gains included, hence this chain.
    """
    return optax.chain(
        optax.clip_by_global_norm(clip_norm),
        optax.scale_by_adam(b1=B1, b2=B2, eps=EPS),
        optax.add_decayed_weights(weight_decay, mask=decay_mask),
        optax.masked(scale_by_trust_ratio(layer_axes), decay_mask),  # ||w|| / ||update||, 1 if either is 0
        optax.scale_by_learning_rate(schedule),
    )


def adamw(
    schedule: optax.Schedule, weight_decay: float, clip_norm: float = 1.0, layer_axes: Any = None
) -> optax.GradientTransformation:
    """AdamW (Loshchilov & Hutter) with BERT's clipping and decay mask: LAMB
    without the trust ratio (so without a use for `layer_axes`)."""
    return optax.chain(
        optax.clip_by_global_norm(clip_norm),
        optax.scale_by_adam(b1=B1, b2=B2, eps=EPS),
        optax.add_decayed_weights(weight_decay, mask=decay_mask),
        optax.scale_by_learning_rate(schedule),
    )


def scores(schedule: optax.Schedule, clip_norm: float = 1.0) -> optax.GradientTransformation:
    """Adam for pruning scores, as movement pruning trains them: a parameter group
    of their own, with its own learning rate, no weight decay and no trust ratio."""
    return optax.chain(
        optax.clip_by_global_norm(clip_norm),
        optax.scale_by_adam(b1=B1, b2=B2, eps=EPS),
        optax.scale_by_learning_rate(schedule),
    )


OPTIMIZERS = {"lamb": lamb, "adamw": adamw}


def build(
    name: str, schedule: optax.Schedule, weight_decay: float, clip_norm: float = 1.0, layer_axes: Any = None
) -> optax.GradientTransformation:
    """The optimizer called `name` ("lamb" or "adamw")."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer {name!r} is not supported; choose one of {sorted(OPTIMIZERS)}")
    return OPTIMIZERS[name](schedule, weight_decay, clip_norm=clip_norm, layer_axes=layer_axes)
