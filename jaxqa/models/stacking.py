"""Blocks a model repeats, held as runs of like blocks stacked: the one layout
of a model's parameters in memory.

A model that repeats a block (the encoder's layers; MobileBERT's feed-forward
networks inside a layer) holds each run of consecutive blocks whose parameters
have equal shapes as one tree whose leaves carry a leading axis with one
entry per block, logically named as the `Repeated` says (`STACKED`): the
encoder's `layers/0_to_11/query/kernel` is (12, D, D), its axes `layers`,
`embed`, `heads`. Blocks whose shapes differ, such as a compact BERT's layers with
their own heads and widths, are runs of their own (`layers/3_to_3`). A run is
scanned, one body compiled once, or its blocks are read one by one
(`Execution.scan`); the model initialises, trains, saves and runs this tree,
and optimizers, pruning and shardings see its layer axis by its logical name.

Files hold one block per name (`layer_3/query/kernel`, and MobileBERT's
`ffn_{j}_intermediate`, `ffn_{j}_output`, `ffn_{j}_LayerNorm` inside a
layer): `Repeated.stack` and `Repeated.unstack` convert at that boundary.
"""

import dataclasses
import functools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxqa.models.execution import KEEPS, Execution

# The logical names of stacked axes, one entry per block of a run: the encoder's
# layers, and blocks that a layer repeats inside it.
STACKED = ("layers", "blocks")
_RUN = re.compile(r"(?P<first>\d+)_to_(?P<last>\d+)")


def run_key(first: int, last: int) -> str:
    return f"{first}_to_{last}"


@dataclasses.dataclass(frozen=True)
class Repeated:
    """Blocks j = 0, 1, ...: in memory, runs at `tree[group]["{a}_to_{b}"]`,
    stacked along an axis logically named `axis`; in files, block j at
    `{stem}_{j}`, or with `parts` at `{stem}_{j}_{part}` for each part (block j
    is then the dict part -> tree)."""

    group: str
    stem: str
    axis: str
    parts: tuple[str, ...] = ()

    def _block_key(self) -> re.Pattern:
        tail = "_(?P<part>" + "|".join(map(re.escape, self.parts)) + ")" if self.parts else ""
        return re.compile(rf"{re.escape(self.stem)}_(?P<j>\d+){tail}")

    def runs(self, tree: Mapping) -> list[tuple[int, int, dict]]:
        """(first block, blocks, stacked parameters) of each run in `tree`, in order."""
        found = []
        for key, run in tree.get(self.group, {}).items():
            match = _RUN.fullmatch(key)
            if not match:
                raise ValueError(f"{self.group}/{key}: not a run of blocks (FIRST_to_LAST)")
            found.append((int(match["first"]), int(match["last"]) - int(match["first"]) + 1, run))
        found.sort(key=lambda run: run[0])
        if [first for first, _, _ in found] != [sum(length for _, length, _ in found[:i]) for i in range(len(found))]:
            raise ValueError(f"{self.group}: runs {sorted(tree[self.group])} do not follow one another from 0")
        return found

    def stack(self, tree: Mapping, each: Callable[[object], object] = lambda block: block) -> dict:
        """`tree` with its blocks one per name (as files hold them) made runs of
        like blocks, each block first made `each(block)`; other keys as they are."""
        pattern, rest = self._block_key(), {}
        blocks: dict[int, Any] = {}
        for key, value in tree.items():
            match = pattern.fullmatch(key)
            if not match:
                rest[key] = value
            elif self.parts:
                blocks.setdefault(int(match["j"]), {})[match["part"]] = value
            else:
                blocks[int(match["j"])] = value
        if sorted(blocks) != list(range(len(blocks))):
            raise ValueError(f"{self.stem}: blocks {sorted(blocks)} are not numbered from 0")
        if blocks:
            rest[self.group] = stack_runs([each(blocks[j]) for j in range(len(blocks))], self.axis)
        return rest

    def unstack(self, tree: Mapping, each: Callable[[object], object] = lambda block: block) -> dict:
        """The inverse of `stack`: each block under its own name, made `each(block)`."""
        out = {key: value for key, value in tree.items() if key != self.group}
        for first, length, run in self.runs(tree):
            for k in range(length):
                block = each(block_of(run, k))
                if self.parts:
                    out.update({f"{self.stem}_{first + k}_{part}": block[part] for part in self.parts})  # type: ignore[index]
                else:
                    out[f"{self.stem}_{first + k}"] = block
        return out


def stack_runs(blocks: Sequence, axis: str) -> dict:
    """{"{a}_to_{b}": blocks a..b stacked} for each run of consecutive blocks
    with equal structure, shapes and dtypes. Parameters boxed with logical axis
    names get the leading axis `axis`."""
    runs: list[list[int]] = []
    for j, block in enumerate(blocks):
        if runs and _signature(block) == _signature(blocks[runs[-1][0]]):
            runs[-1].append(j)
        else:
            runs.append([j])
    return {
        run_key(run[0], run[-1]): jax.tree_util.tree_map(
            functools.partial(_stack_leaves, axis=axis), *(blocks[j] for j in run), is_leaf=_is_box
        )
        for run in runs
    }


def block_of(run, k: int):
    """Block k of a stacked run: each leaf's entry k of its leading axis (a slice
    of each, in a traced program); boxed parameters lose that axis's name."""

    def entry(leaf):
        return leaf.replace_boxed(leaf.unbox()[k]).replace(names=leaf.names[1:]) if _is_box(leaf) else leaf[k]

    return jax.tree_util.tree_map(entry, run, is_leaf=_is_box)


def layer_axes(boxed) -> object:
    """A tree shaped as the parameters `boxed` (with their logical axis names):
    how many leading stacked axes (`STACKED`) each leaf has, one per run it
    lies in (MobileBERT's feed-forward kernels have two)."""

    def count(leaf) -> int:
        names = leaf.names if _is_box(leaf) else ()
        return next((i for i, name in enumerate(names) if name not in STACKED), len(names))

    return jax.tree_util.tree_map(count, boxed, is_leaf=_is_box)


def _is_box(leaf) -> bool:
    return isinstance(leaf, nn.Partitioned)


def _stack_leaves(*leaves, axis: str):
    if _is_box(leaves[0]):
        stacked = jnp.stack([leaf.unbox() for leaf in leaves])
        return leaves[0].replace_boxed(stacked).replace(names=(axis, *leaves[0].names))
    # On the host where the blocks are (a file's weights); in the program where they are traced.
    return np.stack(leaves) if all(isinstance(leaf, np.ndarray) for leaf in leaves) else jnp.stack(leaves)


def _signature(tree) -> tuple:
    leaves, structure = jax.tree_util.tree_flatten(tree)
    return structure, tuple((leaf.shape, jnp.dtype(leaf.dtype)) for leaf in leaves)


def apply(
    module: nn.Module,
    repeated: Repeated,
    templates: Sequence[nn.Module],
    x,
    *args,
    execution: Execution,
    keys: jax.Array | None = None,
):
    """x after blocks 0 .. len(templates) - 1 in turn, each `templates[j]` (an
    unbound module) applied to (x, *args) with block j's parameters, which
    `module` holds as runs at `repeated.group`. Blocks of a run compute the same
    function of their parameters, so a run is applied with its first template:
    scanned when `execution.scan`, else block by block.

    `keys` (len(templates),): block j's dropout key; `execution.remat`
    "matmuls" or "layer": the backward pass recomputes each block from its
    input and what the policy keeps. Initializing, `module` gets the blocks'
    fresh parameters, stacked into runs.
    """
    if not templates:
        return x
    if module.is_initializing():
        fresh = [template.init(module.make_rng("params"), x, *args)["params"] for template in templates]
        runs = module.param(repeated.group, lambda _: stack_runs(fresh, repeated.axis))
    else:
        runs = module.variables["params"][repeated.group]
    for first, length, params in repeated.runs({repeated.group: runs}):
        if not execution.scan or length == 1:  # each block its own template, named as it is in files
            for k in range(length):
                block = _applied(templates[first + k], args, execution.remat, in_scan=False)
                x = block(x, block_of(params, k), None if keys is None else keys[first + k])
            continue
        block = _applied(templates[first], args, execution.remat, in_scan=True)
        step_keys = None if keys is None else keys[first : first + length]
        with jax.named_scope(f"{repeated.stem}_{run_key(first, first + length - 1)}"):  # in profiles and the HLO
            x, _ = jax.lax.scan(lambda x, inputs, block=block: (block(x, *inputs), None), x, (params, step_keys))  # type: ignore[misc]
    return x


def _applied(template: nn.Module, args: tuple, remat: str, in_scan: bool) -> Callable:
    """`template` as a function (x, its parameters, its dropout key or None) -> x,
    rematerialised as `remat` says."""

    def block(x, params, key):
        return template.apply({"params": params}, x, *args, rngs={} if key is None else {"dropout": key})

    if remat in KEEPS:  # within a scan, XLA cannot merge one step's recomputation into another's
        return jax.checkpoint(block, policy=KEEPS[remat], prevent_cse=not in_scan)
    return block
