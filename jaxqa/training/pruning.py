"""Pruning BERT while fine-tuning: which encoder weights are kept, the cubic
schedule of the share kept, and the L1 penalty on the scores.

The weights pruned are the kernels of every layer's six Linear layers (query,
key, value, attention output, intermediate, output). The methods, as movement
pruning (Sanh et al., 2020) and block movement pruning (nn_pruning) define them:

- `magnitude`: in each kernel, the largest |weights|;
- `movement`: in each kernel, the top of a learned score per weight;
- `soft-movement`: learned scores per weight under an L1 penalty on their
  sigmoids, kept above one threshold shared by all kernels (so layers end with
  the sparsity the scores give them);
- `hybrid`: the same with one score per square block of the attention kernels
  and one per feed-forward unit, shared by its column of the intermediate
  kernel and its row of the output one, so whole units go.

Scores start at zero and learn through the straight-through estimator: the
mask's gradient is passed to the scores as it is (for movement, dL/dS =
dL/dW' * W where W' = W * mask). The share kept follows the cubic schedule:
all weights until the initial warm-up, then a cubic decay to `remaining`,
reached at the final warm-up and held there. For the thresholded methods the
threshold is set each step so that the share kept is the schedule's (counting
the weights each score covers). `Pruning.select` chooses what is kept, once per
training step; `Pruning.apply` zeroes the rest and reports the share reached.

The model holds its layers as stacked runs (`params["layers"]["{a}_to_{b}"]`,
`jaxqa.models.stacking`), and the scores and masks are laid out the same way:
`{run: {name: (L, ...)}}`, one entry per layer along the leading axis, on
which what is chosen layer by layer is mapped.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp

METHODS = ("magnitude", "movement", "soft-movement", "hybrid")
KERNELS = ("query", "key", "value", "attention_output", "intermediate", "output")
ATTENTION = KERNELS[:4]


@dataclasses.dataclass(frozen=True)
class Pruning:
    method: str
    remaining: float  # share of the encoder's Linear weights kept at the end
    total_steps: int
    warmup_steps: int  # the learning rate's warm-up: the unit of the two below
    initial_warmup: float  # steps (in warm-ups) before pruning starts
    final_warmup: float  # steps (in warm-ups) at `remaining` before the end
    penalty: float  # final weight of the L1 penalty (soft-movement and hybrid)
    block: int  # edge of the square blocks of `hybrid`'s attention kernels

    def share(self, step) -> jax.Array:
        """The share of weights kept at optimizer step `step`, () float32."""
        start = self.initial_warmup * self.warmup_steps
        end = self.total_steps - self.final_warmup * self.warmup_steps
        progress = jnp.clip((step - start) / max(end - start, 1), 0, 1)
        return self.remaining + (1 - self.remaining) * (1 - progress) ** 3

    def init_scores(self, params: dict) -> dict | None:
        """Zero scores for every kernel pruned, stacked as its run; None for
        magnitude pruning, which has none."""
        if self.method == "magnitude":
            return None
        scores = {}
        for run, layers in params["layers"].items():
            kernels = {name: layers[name]["kernel"] for name in KERNELS}  # (L, I, O) each
            if self.method == "hybrid":
                b = self.block
                scores[run] = {
                    name: jnp.zeros((k.shape[0], k.shape[1] // b, k.shape[2] // b))
                    for name, k in kernels.items()
                    if name in ATTENTION
                }
                scores[run]["feed_forward"] = jnp.zeros(kernels["intermediate"].shape[::2])  # (L, M)
            else:
                scores[run] = {name: jnp.zeros(k.shape) for name, k in kernels.items()}
        return scores

    def select(self, params: dict, scores: dict | None, step) -> dict:
        """What is kept at optimizer step `step`: {run: {name: 0/1}} at the
        scores' shapes (the kernels' for magnitude), with no gradient. It depends
        on the parameters, the scores and the step alone, so a training step finds
        it once for all its micro-batches."""
        share = self.share(step)
        top = jax.vmap(_top, in_axes=(0, None))  # each layer of a run on its own
        if self.method == "magnitude":
            return jax.lax.stop_gradient(
                {
                    run: {name: top(jnp.abs(layers[name]["kernel"]), share) for name in KERNELS}
                    for run, layers in params["layers"].items()
                }
            )
        assert scores is not None  # the other methods learn scores
        if self.method == "movement":
            chosen = {run: {name: top(s, share) for name, s in named.items()} for run, named in scores.items()}
        else:
            covers = jax.tree_util.tree_leaves(self._covers(params, scores))
            threshold = _highest(jax.tree_util.tree_leaves(scores), covers, share)  # one for all kernels
            chosen = jax.tree_util.tree_map(lambda s: (s >= threshold).astype(s.dtype), scores)
        return jax.lax.stop_gradient(chosen)

    def masks(self, scores: dict | None, chosen: dict) -> dict:
        """{run: {kernel name: 0/1 mask that broadcasts to the kernel}} from
        `select`'s choice; the scores get the masks' gradients straight through."""
        if self.method == "magnitude":
            return chosen
        hard = jax.tree_util.tree_map(_straight_through, chosen, scores)
        if self.method != "hybrid":
            return hard
        b = self.block
        return {
            run: {
                **{name: jnp.repeat(jnp.repeat(named[name], b, 1), b, 2) for name in ATTENTION},
                "intermediate": named["feed_forward"][:, None, :],  # (L, 1, M)
                "output": named["feed_forward"][:, :, None],  # (L, M, 1)
            }
            for run, named in hard.items()
        }

    def apply(self, params: dict, scores: dict | None, chosen: dict) -> tuple[dict, jax.Array]:
        """(params with the weights `select` did not choose zero, share of the weights kept)."""
        masks = self.masks(scores, chosen)
        runs, kept, total = dict(params["layers"]), jnp.zeros(()), 0
        for run, named in masks.items():
            runs[run] = dict(runs[run])
            for name, mask in named.items():
                kernel = runs[run][name]["kernel"]
                runs[run][name] = {**runs[run][name], "kernel": kernel * mask}
                kept += jnp.broadcast_to(jax.lax.stop_gradient(mask), kernel.shape).sum()
                total += kernel.size
        return {**params, "layers": runs}, kept / total

    def penalty_term(self, params: dict, scores: dict | None, step) -> tuple[jax.Array, jax.Array]:
        """(the penalty's weight now, its term in the loss), for soft-movement and
        hybrid (0 otherwise). The weight grows with the share pruned, to `penalty`
        at the end. The term is the weight times the share of weights the
        sigmoids of the scores keep, each score counted for the weights it
        covers, so that every weight is pushed alike: a block score as hard as
        the weights of its block, a unit's as its column and row. (The
        reference averages over kernels instead, which in hybrid pushes a block
        score about ten times as hard as a unit's; see the README.)"""
        if self.method not in ("soft-movement", "hybrid") or self.remaining == 1:
            return jnp.zeros(()), jnp.zeros(())
        assert scores is not None  # both methods learn scores
        weight = self.penalty * (1 - self.share(step)) / (1 - self.remaining)
        pairs = list(zip(jax.tree_util.tree_leaves(scores), jax.tree_util.tree_leaves(self._covers(params, scores))))
        soft_kept = sum(cover * jax.nn.sigmoid(s).sum() for s, cover in pairs) / sum(
            cover * s.size for s, cover in pairs
        )
        return weight, weight * soft_kept

    def _covers(self, params: dict, scores: dict) -> dict:
        """How many weights each score of a leaf covers: one, a block, or a unit's column and row."""
        if self.method == "soft-movement":
            return {run: dict.fromkeys(named, 1) for run, named in scores.items()}
        return {
            run: {
                **dict.fromkeys(ATTENTION, self.block**2),
                "feed_forward": 2 * params["layers"][run]["intermediate"]["kernel"].shape[1],  # (L, D, M): D
            }
            for run in scores
        }


def block_edge(block: int, head_dim: int, hidden_size: int) -> int:
    """The block edge used: `block`, or the largest edge dividing it, a head and the
    hidden size, where heads are narrower than a block (or not a multiple of it)."""
    return math.gcd(block, head_dim, hidden_size)


def _straight_through(hard, scores):
    """`hard` forward; the gradient passes to `scores` unchanged."""
    return hard + scores - jax.lax.stop_gradient(scores)


def _top(x, share):
    """1 where `x` is among its floor(share * size) largest entries (at least one;
    ties with the smallest of them are kept too), else 0."""
    return (x >= _highest([x], [1], share)).astype(x.dtype)


def _highest(leaves: list, covers: list, share) -> jax.Array:
    """The largest value t such that the entries >= t of `leaves` cover at least
    floor(share * all weights) weights, and at least one entry (each entry of a
    leaf covering that leaf's `covers`): the value at which the highest entries
    reach the share, ties and all. Found bit by bit in the float32 order, in 32
    counting passes instead of a sort, which is far slower on a CPU
    (benchmarks/results/prune_step_cpu.json against prune_step_sorting_cpu.json). A share above 1 gives the smallest value."""
    total = sum(leaf.size * cover for leaf, cover in zip(leaves, covers))
    need = jnp.clip(jnp.floor(share * total), 1, total).astype(jnp.int32)
    keys = [_order_key(leaf) for leaf in leaves]

    def next_bit(i, found):
        candidate = found | jnp.left_shift(jnp.uint32(1), (31 - i).astype(jnp.uint32))
        covered = sum(cover * jnp.sum(key >= candidate, dtype=jnp.int32) for key, cover in zip(keys, covers))
        return jnp.where(covered >= need, candidate, found)

    found = jax.lax.fori_loop(0, 32, next_bit, jnp.uint32(0))  # the largest key that still covers `need`
    bits = jnp.where(found >> 31 == 1, found & jnp.uint32(0x7FFFFFFF), ~found)
    return jax.lax.stop_gradient(jax.lax.bitcast_convert_type(bits, jnp.float32))


def _order_key(x) -> jax.Array:
    """uint32 keys of float32 values, in the values' order (-0 just below +0)."""
    bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)
    return jnp.where(bits >> 31 == 1, ~bits, bits | jnp.uint32(0x80000000))
