"""Blocks a model repeats under numbered names, run as one scanned body.

jaxqa stores every repeated block under names of its own: the encoder's layers
as `layer_{i}`, MobileBERT's stacked feed-forward networks as
`ffn_{j}_intermediate`, `ffn_{j}_output` and `ffn_{j}_LayerNorm`. That layout is
canonical: files, checkpoints, the train state, LAMB's trust ratios, pruning,
students and compaction all see one block per name.

So that XLA compiles a block once however often it repeats, each run of
consecutive blocks with equal parameter shapes is stacked along a new leading
axis and scanned over (`apply`). Blocks whose shapes differ, such as a compact
BERT's layers with their own heads and widths, run one after another. The
stacking happens where the parameters are used:

- from the canonical tree, inside the jitted program that uses them (the
  training step), so that optimizers and checkpoints never see it;
- ahead of time for inference (`Repeated.stack`), where copying the weights on
  every call would cost a CPU as much as the model itself. A stacked run is
  stored under one name, e.g. `layer_0_to_11`.
"""

import dataclasses
import functools
import re
from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

# What the backward pass recomputes instead of keeping (`Execution.remat`):
# nothing; attention's probabilities (the (B, N, T, T) tensors) from its
# queries, keys and values; everything but the outputs of the layers' matrix
# products with weights (tagged `MATMUL`): attention, norms, activations; or
# each whole layer from its input.
REMAT = ("none", "attention", "matmuls", "layer")
MATMUL = "matmul"
# The jax.checkpoint policy of each remat that checkpoints whole blocks: what it keeps.
_KEEPS = {"matmuls": jax.checkpoint_policies.save_only_these_names(MATMUL), "layer": None}


@dataclasses.dataclass(frozen=True)
class Execution:
    """How the encoder's layers run, whatever their weights compute."""

    scan: bool = True  # runs of like blocks as one scanned body; False: each block compiled on its own
    remat: str = "none"  # one of REMAT

    def __post_init__(self):
        if self.remat not in REMAT:
            raise ValueError(f"remat={self.remat!r}: choose one of {', '.join(REMAT)}")

    @property
    def recomputes_attention(self) -> bool:
        return self.remat == "attention"


@dataclasses.dataclass(frozen=True)
class Repeated:
    """Blocks j = 0, 1, ... stored as the trees at `{stem}_{j}`, or, with `parts`,
    as the trees at `{stem}_{j}_{part}` for each part (block j is then the dict
    part -> tree). A run of blocks a..b stacked is stored at `{stem}_{a}_to_{b}`."""

    stem: str
    parts: tuple[str, ...] = ()

    def _block_pattern(self) -> re.Pattern:
        tail = "_(?P<part>" + "|".join(map(re.escape, self.parts)) + ")" if self.parts else ""
        return re.compile(rf"{re.escape(self.stem)}_(?P<j>\d+){tail}")

    def _run_pattern(self) -> re.Pattern:
        return re.compile(rf"{re.escape(self.stem)}_(?P<first>\d+)_to_(?P<last>\d+)")

    def _store(self, tree: dict, key: str, block) -> None:
        if self.parts:
            tree.update({f"{key}_{part}": block[part] for part in self.parts})
        else:
            tree[key] = block

    def _take(self, tree: Mapping, key: str):
        return {part: tree[f"{key}_{part}"] for part in self.parts} if self.parts else tree[key]

    def blocks(self, tree: Mapping) -> dict[int, object]:
        """The canonical blocks in `tree`, by number."""
        found = {}
        for key in tree:
            match = self._block_pattern().fullmatch(key)
            if match:
                found[int(match["j"])] = self._take(tree, f"{self.stem}_{match['j']}")
        return found

    def stack(self, tree: Mapping) -> dict:
        """`tree` with each run of two or more consecutive blocks of equal shapes
        stacked under one name; other keys as they are. Parameters boxed with
        logical axis names get an unnamed leading axis."""
        blocks = self.blocks(tree)
        rest = {key: value for key, value in tree.items() if not self._block_pattern().fullmatch(key)}
        order = sorted(blocks)
        for first, last in _runs([blocks[j] for j in order]):
            first, last = order[first], order[last]
            if first == last:
                self._store(rest, f"{self.stem}_{first}", blocks[first])
            else:
                rest[f"{self.stem}_{first}_to_{last}"] = jax.tree_util.tree_map(
                    _stack_leaves, *(blocks[j] for j in range(first, last + 1)), is_leaf=_is_box
                )
        return rest

    def segments(self, tree: Mapping) -> list[tuple[int, int, object]]:
        """(first block, blocks, parameters) of each stored run and each single block,
        in order; a run's parameters are stacked (blocks, ...)."""
        found = {j: (j, 1, block) for j, block in self.blocks(tree).items()}
        for key, value in tree.items():
            match = self._run_pattern().fullmatch(key)
            if match:
                first, last = int(match["first"]), int(match["last"])
                found[first] = (first, last - first + 1, value)
        return [found[j] for j in sorted(found)]

    def unstack(self, tree: Mapping) -> dict:
        """The canonical tree of a stacked one (a canonical tree as it is)."""
        out = {}
        for key, value in tree.items():
            match = self._run_pattern().fullmatch(key)
            if not match:
                out[key] = value
                continue
            for k, j in enumerate(range(int(match["first"]), int(match["last"]) + 1)):
                self._store(
                    out, f"{self.stem}_{j}", jax.tree_util.tree_map(functools.partial(_unstack_leaf, k=k), value)
                )
        return out


# The name of a stacked run of blocks of any stem, e.g. `layer_0_to_11`.
_RUN = re.compile(r".+_\d+_to_\d+")


def stacked_axes(path) -> int:
    """How many leading block axes the parameter at `path` (a jax key path) has
    from being stacked: one per stacked run it lies in (MobileBERT's feed-forward
    kernels in stacked layers have two)."""
    return sum(bool(_RUN.fullmatch(str(getattr(key, "key", "")))) for key in path)


def _is_box(leaf) -> bool:
    return isinstance(leaf, nn.Partitioned)


def _stack_leaves(*leaves):
    if _is_box(leaves[0]):
        return (
            leaves[0]
            .replace_boxed(jnp.stack([leaf.unbox() for leaf in leaves]))
            .replace(names=(None, *leaves[0].names))
        )
    stacked = jnp.stack(leaves)
    # XLA's CPU compiler reads a slice of stacked bfloat16 weights by converting
    # all of them to float32 on every call, which makes bfloat16 slower than
    # float32; their bits, as 16-bit integers, slice as they are.
    return jax.lax.bitcast_convert_type(stacked, jnp.uint16) if stacked.dtype == jnp.bfloat16 else stacked


def _from_bits(leaf):
    """A stacked leaf (or a slice of one) as it was before `_stack_leaves`: bfloat16
    from its bits; boxed leaves, stacked as they are, as they are."""
    return leaf if _is_box(leaf) or leaf.dtype != jnp.uint16 else jax.lax.bitcast_convert_type(leaf, jnp.bfloat16)


def _block_params(params: dict) -> dict:
    """One block's slice of a stacked run, its leaves as the block computes with
    them; runs stacked inside the block (MobileBERT's feed-forward networks) stay
    bits until their own scan slices them."""
    return {
        key: value if _RUN.fullmatch(key) else _block_params(value) if isinstance(value, dict) else _from_bits(value)
        for key, value in params.items()
    }


def _unstack_leaf(leaf, k: int):
    return _from_bits(leaf[k])


def _signature(tree) -> tuple:
    leaves, structure = jax.tree_util.tree_flatten(tree)
    return structure, tuple((leaf.shape, jnp.dtype(leaf.dtype)) for leaf in leaves)


def _runs(blocks: Sequence) -> list[tuple[int, int]]:
    """(first, last) of each run of consecutive blocks with equal structure, shapes and dtypes."""
    runs: list[tuple[int, int]] = []
    for j, block in enumerate(blocks):
        if runs and _signature(block) == _signature(blocks[runs[-1][0]]):
            runs[-1] = (runs[-1][0], j)
        else:
            runs.append((j, j))
    return runs


def apply(
    module: nn.Module,
    repeated: Repeated,
    templates: Sequence[nn.Module],
    x,
    *args,
    scan: bool,
    keys: jax.Array | None = None,
    remat: str = "none",
):
    """x after blocks 0 .. len(templates) - 1 in turn, each `templates[j]` (an
    unbound module) applied to (x, *args) with block j's parameters, which
    `module` holds as `repeated` says (canonical or stacked). Blocks of equal
    shapes compute the same function of their parameters, so a run of them is
    scanned with its first template (when `scan`; a stacked run always is).

    `keys` (len(templates),): block j's dropout key; `remat` "matmuls" or
    "layer" (see REMAT): the backward pass recomputes each block from its input
    and what the policy keeps. Initializing, `module` gets block j's fresh
    parameters under its canonical names.
    """
    stored: Mapping
    if module.is_initializing():
        stored = {}
        for j, template in enumerate(templates):
            fresh = template.init(module.make_rng("params"), x, *args)["params"]
            names: dict = {}
            repeated._store(names, f"{repeated.stem}_{j}", fresh)
            stored |= {name: module.param(name, lambda _, value=value: value) for name, value in names.items()}
    else:
        stored = module.variables["params"]
    # Blocks stored one by one are stacked here, inside the program, to be scanned.
    for first, length, params in repeated.segments(repeated.stack(stored) if scan else stored):
        template = templates[first]

        def block(x, params, key, template=template):
            params = _block_params(params)
            return template.apply({"params": params}, x, *args, rngs={} if key is None else {"dropout": key})

        if remat in _KEEPS:
            block = jax.checkpoint(block, policy=_KEEPS[remat], prevent_cse=length == 1)
        if length == 1:
            x = block(x, params, None if keys is None else keys[first])
            continue
        step_keys = None if keys is None else keys[first : first + length]
        with jax.named_scope(f"{repeated.stem}_{first}_to_{first + length - 1}"):  # in profiles and the HLO
            x, _ = jax.lax.scan(lambda x, inputs, block=block: (block(x, *inputs), None), x, (params, step_keys))  # type: ignore[misc]
    return x
