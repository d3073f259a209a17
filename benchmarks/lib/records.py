"""The record every benchmark script writes: the machine (device, platform,
host, CPU flags), the package versions, the commit, the command, its settings
and its rows, as JSON in benchmarks/results/, and a table of the rows on
stdout.

A record is named after the script that writes it:
benchmarks/results/<script>[_<variant>...]_<platform>.json, where <script> is
the script's file name without .py (latency for cpu/latency.py), each variant a
word for what differs from the script's plain run (a part run alone, a
question count, `--variant`'s value such as the machine), and <platform> the
one jax ran on (cpu, gpu).
"""

import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import jax

from lib.paths import RESULTS, ROOT

PACKAGES = ("jax", "jaxlib", "flax", "optax", "tokenizers", "torch", "transformers", "datasets")
# The CPU features that decide which precisions run fast (jaxqa.precision).
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")


def cpu_name() -> str:
    """The processor's model name, e.g. 'AMD EPYC 9B14'."""
    from jaxqa import precision

    return precision.cpu_name() or platform.processor() or platform.machine()


def environment() -> dict:
    """The device jax runs on, the host, the package versions and the commit."""
    from jaxqa import precision

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    # $JAXQA_COMMIT names the commit of a copied tree whose git history is missing or stale (a lent GPU machine's).
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    if os.environ.get("JAXQA_COMMIT"):
        commit, dirty = os.environ["JAXQA_COMMIT"], ""
    device = jax.devices()[0]
    return {
        "device": f"{jax.device_count()} x {device.device_kind}",
        "platform": device.platform,
        "host": f"{cpu_name()}, {_cpu_count()} cores",
        "cpu_flags": [flag for flag in CPU_FLAGS if flag in precision.cpu_flags()],
        "versions": versions,
        "commit": commit + ("+changes" if dirty else ""),
        "command": " ".join(["python", *sys.argv]),
    }


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on macOS
        return os.cpu_count() or 1


def write(settings: dict, rows: list[dict], *variants: str) -> Path:
    """Prints `rows` as a table and writes them with `settings` and the
    environment to benchmarks/results/<script>_<variant>..._<platform>.json,
    <script> being the script run and the empty variants left out."""
    env = environment()
    print_table(rows)
    name = "_".join([Path(sys.argv[0]).stem, *filter(None, variants), env["platform"]])
    out = RESULTS / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**env, "settings": settings, "rows": rows}, indent=2, default=_path_text) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return out


def _path_text(value: object) -> str:
    """A path in a record (a flag's value among the settings), as its text."""
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def print_table(rows: list[dict]) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    cells = [[_cell(row.get(key, "")) for key in columns] for row in rows]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]
    for line in (columns, *cells):
        print("  ".join(text.rjust(width) for text, width in zip(line, widths)))


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)
