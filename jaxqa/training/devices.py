"""The processes of a run and the device mesh they train on."""

import glob
import logging
import os

import jax
from jax.sharding import Mesh

from jaxqa import compilation_cache, sharding
from jaxqa.training.settings import DeviceSettings

log = logging.getLogger("jaxqa.train")

# The device files an accelerator's driver makes: NVIDIA GPUs, and TPU chips
# (/dev/accel* up to v4, /dev/vfio/N from v5e on; /dev/vfio/vfio alone is only the driver).
_GPU_FILES = ("/dev/nvidia0", "/dev/nvidiactl")
_TPU_FILES = ("/dev/accel[0-9]*", "/dev/vfio/[0-9]*")
_INSTALLS = {"tpu": 'pip install -U "jax[tpu]"', "gpu": 'pip install -U "jax[cuda12]"'}


def start_processes(d: DeviceSettings) -> dict[str, int]:
    """Joins the other processes of a multi-host run and enables the compilation
    cache; the sizes of the mesh's axes (--mesh) over every device."""
    if d.num_processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU runs; other platforms ignore it
        jax.distributed.initialize(d.coordinator, num_processes=d.num_processes, process_id=d.process_id)
    compilation_cache.enable(d.compilation_cache)
    return sharding.parse_mesh(d.mesh, jax.device_count())


def accelerators_present() -> list[str]:
    """The kinds of accelerator ("tpu", "gpu") whose device files this machine
    has, whether or not JAX can use them."""
    found = {"gpu": any(os.path.exists(f) for f in _GPU_FILES), "tpu": any(glob.glob(p) for p in _TPU_FILES)}
    return [kind for kind, present in found.items() if present]


def report_devices() -> None:
    """Says which platform and how many devices the run trains on, and warns
    when that is the CPU on a machine with a TPU or GPU (its jax plugin missing
    or failing, or JAX_PLATFORMS forcing the CPU), which trains many times slower."""
    platform, devices = jax.devices()[0].platform, jax.devices()
    log.info(f"training on {len(devices)} {platform} device(s) ({devices[0].device_kind}) "
             f"in {jax.process_count()} process(es)")  # fmt: skip
    if platform != "cpu":
        return
    for kind in accelerators_present():
        forced = os.environ.get("JAX_PLATFORMS")
        cause = f"JAX_PLATFORMS={forced} forces the CPU" if forced else f"JAX has no working {kind} backend"
        log.warning(f"training on the CPU although this machine has a {kind.upper()}: {cause}; "
                    f"install it with `{_INSTALLS[kind]}`, restart Python and check that jax.devices() lists it")  # fmt: skip


def make_mesh(sizes: dict[str, int]) -> Mesh:
    """The (data, model) mesh of `sizes`."""
    log.info(f"mesh data={sizes['data']} model={sizes['model']}")
    return sharding.make_mesh(sizes)
