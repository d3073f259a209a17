"""What `jaxqa.train` says of the devices it trains on: the platform and their
number at start, and a warning when it trains on the CPU of a machine that has
a TPU or GPU (a missing or failing jax plugin, or JAX_PLATFORMS=cpu)."""

import io

import jax
import pytest
from test_train import flags

from jaxqa import train
from jaxqa.errors import log_to
from jaxqa.training import devices


def test_a_run_says_its_platform_and_warns_of_an_unused_gpu(squad, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(devices, "accelerators_present", lambda: ["gpu"])
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    assert train.main([*flags(squad, "bert", tmp_path / "run"), "--max-steps", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert (
        lines[0] == f"training on {jax.device_count()} cpu device(s) ({jax.devices()[0].device_kind}) in 1 process(es)"
    )
    warnings = [line for line in lines if line.startswith("WARNING: ") and "GPU" in line]
    assert warnings == [
        "WARNING: training on the CPU although this machine has a GPU: JAX has no working gpu backend; "
        'install it with `pip install -U "jax[cuda12]"`, restart Python and check that jax.devices() lists it'
    ]


@pytest.mark.parametrize(
    "present, forced, warning",
    [
        ([], "cpu", None),
        (["tpu"], "cpu", 'has a TPU: JAX_PLATFORMS=cpu forces the CPU; install it with `pip install -U "jax[tpu]"`'),
        (["tpu"], None, "has a TPU: JAX has no working tpu backend"),
    ],
)
def test_the_cpu_is_a_warning_only_where_an_accelerator_is_present(monkeypatch, present, forced, warning):
    monkeypatch.setattr(devices, "accelerators_present", lambda: present)
    if forced:
        monkeypatch.setenv("JAX_PLATFORMS", forced)
    else:
        monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    out = io.StringIO()
    with log_to(out):
        devices.report_devices()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith(f"training on {jax.device_count()} cpu device(s)")
    assert len(lines) == (2 if warning else 1), lines
    if warning:
        assert lines[1].startswith("WARNING: training on the CPU although this machine") and warning in lines[1]


def test_accelerators_are_found_by_their_device_files(monkeypatch, tmp_path):
    (tmp_path / "accel0").touch()
    monkeypatch.setattr(devices, "_TPU_FILES", (str(tmp_path / "accel[0-9]*"),))
    monkeypatch.setattr(devices, "_GPU_FILES", (str(tmp_path / "nvidia0"),))
    assert devices.accelerators_present() == ["tpu"]
    (tmp_path / "nvidia0").touch()
    assert devices.accelerators_present() == ["gpu", "tpu"]
