"""The processes of a run and the device mesh they train on."""

import logging

import jax
from jax.sharding import Mesh

from jaxqa import compilation_cache, sharding
from jaxqa.training.settings import DeviceSettings

log = logging.getLogger("jaxqa.train")


def start_processes(d: DeviceSettings) -> dict[str, int]:
    """Joins the other processes of a multi-host run and enables the compilation
    cache; the sizes of the mesh's axes (--mesh) over every device."""
    if d.num_processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU runs; other platforms ignore it
        jax.distributed.initialize(d.coordinator, num_processes=d.num_processes, process_id=d.process_id)
    compilation_cache.enable(d.compilation_cache)
    return sharding.parse_mesh(d.mesh, jax.device_count())


def make_mesh(sizes: dict[str, int]) -> Mesh:
    """The (data, model) mesh of `sizes`."""
    log.info(f"mesh data={sizes['data']} model={sizes['model']} over {jax.device_count()} "
             f"{jax.devices()[0].platform} device(s)")  # fmt: skip
    return sharding.make_mesh(sizes)
