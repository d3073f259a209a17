"""The device mesh and how weights and batches are laid out on it.

One rules table maps the logical axis names that every weight carries
(`jaxqa.models.layers`) onto the mesh axes `data` and `model`. A dimension that
the mesh axis does not divide (a vocabulary of 30,522 over 4 devices, a single
convolution group) stays replicated rather than failing.
"""

import math

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxqa.errors import Error

DATA, MODEL = "data", "model"

# Logical axis -> mesh axis. Attention heads and the feed-forward width are
# split over `model` (tensor parallelism); `embed` is split over `data` only
# with FSDP, when weights are sharded like the batch.
RULES = {
    "vocab": MODEL,
    "heads": MODEL,
    "mlp": MODEL,
    "groups": MODEL,
    "embed": None,
    "bottleneck": None,
    "kernel_in": None,
    "position": None,
    "type": None,
    "classes": None,
    "layers": None,  # stacked runs' axes: every device holds all of a run's blocks
    "blocks": None,
}
FSDP_RULES = {**RULES, "embed": DATA, "bottleneck": DATA}


class MeshError(Error):
    """A mesh the devices cannot form; the message names the flag."""


def parse_mesh(spec: str | None, device_count: int) -> dict[str, int]:
    """`"data=4,model=2"` -> {data: 4, model: 2}; default: every device on `data`."""
    if not spec:
        return {DATA: device_count, MODEL: 1}
    sizes = {DATA: 1, MODEL: 1}
    for part in spec.split(","):
        name, _, size = part.partition("=")
        if name.strip() not in sizes or not size.strip().isdigit() or int(size) < 1:
            raise MeshError(f"--mesh {spec!r}: expected 'data=N,model=M' with positive sizes")
        sizes[name.strip()] = int(size)
    if device_count % math.prod(sizes.values()):
        raise MeshError(
            f"--mesh {spec!r}: {sizes[DATA]} x {sizes[MODEL]} devices do not divide the {device_count} devices"
        )
    return sizes


def make_mesh(sizes: dict[str, int]) -> Mesh:
    """A mesh over the first data x model devices (all of them by default).

    Auto axes: XLA propagates shardings through the model (GSPMD), so model
    code needs no sharding annotations of its own.
    """
    count = sizes[DATA] * sizes[MODEL]
    if count < jax.device_count() and jax.process_count() > 1:
        raise MeshError(
            f"--mesh: with {jax.process_count()} processes the mesh must span all {jax.device_count()} devices"
        )
    return jax.make_mesh(
        (sizes[DATA], sizes[MODEL]),
        (DATA, MODEL),
        axis_types=(AxisType.Auto, AxisType.Auto),
        devices=jax.devices()[:count],
    )


def _spec(names: tuple[str | None, ...], shape: tuple[int, ...], mesh: Mesh, rules: dict) -> P:
    used: set[str] = set()
    axes: list[str | None] = []
    for name, size in zip(names, shape):
        axis = rules.get(name) if name else None
        if axis is None or axis in used or size % mesh.shape[axis]:
            axes.append(None)
        else:
            used.add(axis)
            axes.append(axis)
    return P(*axes)


def param_shardings(abstract_params, mesh: Mesh, fsdp: bool = False):
    """NamedShardings for a tree of boxed (logically named) abstract parameters."""
    rules = FSDP_RULES if fsdp else RULES

    def sharding(leaf):
        if isinstance(leaf, nn.Partitioned):
            return NamedSharding(mesh, _spec(leaf.names, leaf.value.shape, mesh, rules))
        return NamedSharding(mesh, P())

    return jax.tree_util.tree_map(sharding, abstract_params, is_leaf=lambda x: isinstance(x, nn.Partitioned))


def batch_sharding(mesh: Mesh, ndim: int, leading: int = 0) -> NamedSharding:
    """Batch arrays split over `data` along axis `leading` (after any accumulation axis)."""
    return NamedSharding(mesh, P(*([None] * leading), DATA, *([None] * (ndim - leading - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def global_batch(local: dict[str, np.ndarray], mesh: Mesh, leading: int = 0) -> dict[str, jax.Array]:
    """Assembles each process's rows of a batch into global arrays on the mesh."""
    return {
        key: jax.make_array_from_process_local_data(batch_sharding(mesh, value.ndim, leading), value)
        for key, value in local.items()
    }


def from_host(value: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A global array from a host array that every process holds whole."""
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])
