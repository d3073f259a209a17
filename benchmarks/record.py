"""What every benchmark writes: the machine, the versions, the commit, the
command, its settings and its rows, as JSON under benchmarks/results/, and a
table of the rows on stdout."""

import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import jax
import numpy as np

from jaxqa import precision

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PACKAGES = ("jax", "jaxlib", "flax", "optax", "tokenizers", "torch", "transformers", "datasets")


def cpu_name() -> str:
    """The processor's model name, e.g. 'AMD EPYC 9B14'."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# The CPU features that decide which precisions run fast (jaxqa.precision).
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")


def environment() -> dict:
    """The device jax runs on, the host, the package versions and the commit."""
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
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def summary(seconds) -> dict:
    """Median and 90th percentile of timings, in milliseconds."""
    seconds = np.asarray(seconds, float)
    return {
        "median_ms": round(1e3 * float(np.median(seconds)), 2),
        "p90_ms": round(1e3 * float(np.percentile(seconds, 90)), 2),
        "n": int(seconds.size),
    }


def write(name: str, settings: dict, rows: list[dict]) -> Path:
    """Prints `rows` as a table and writes benchmarks/results/<name>_<platform>.json."""
    env = environment()
    print_table(rows)
    out = RESULTS / f"{name}_{env['platform']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**env, "settings": settings, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return out


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
