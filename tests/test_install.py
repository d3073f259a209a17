"""A normal (non-editable) install: the wheel holds what training needs, the
shipped recipes included, and trains from a folder outside the checkout."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from squad_fixture import write_squad

ROOT = Path(__file__).resolve().parents[1]


def run(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_the_wheel_installs_and_trains_outside_the_checkout(tmp_path):
    # Built from a copy, so that the build's leftovers stay out of the checkout; offline: the
    # build uses the setuptools of this environment, the install nothing but the wheel.
    source = tmp_path / "source"
    shutil.copytree(
        ROOT, source, ignore=shutil.ignore_patterns(".*", "build", "runs", "tests", "benchmarks", "*.egg-info")
    )
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(source),
        ],
        cwd=tmp_path,
    )
    wheel = next((tmp_path / "dist").glob("jaxqa-*.whl"))
    site = tmp_path / "site"
    run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site), str(wheel)],
        cwd=tmp_path,
    )
    elsewhere = tmp_path / "elsewhere"
    squad = write_squad(elsewhere / "data")
    env = {**os.environ, "PYTHONPATH": str(site), "JAX_PLATFORMS": "cpu", "HF_HUB_OFFLINE": "1"}

    where = run([sys.executable, "-c", "import jaxqa; print(jaxqa.__file__)"], cwd=elsewhere, env=env).stdout
    assert Path(where.strip()).is_relative_to(site)  # the installed copy, not the checkout
    run(
        [
            sys.executable,
            "-m",
            "jaxqa.train",
            "--model",
            "squeezebert",
            "--config",
            "squeezebert:tiny",
            "--tokenizer",
            str(squad.parent),
            "--train-file",
            str(squad),
            "--eval-file",
            "",
            "--max-steps",
            "2",
            "--run-dir",
            "run",
        ],
        cwd=elsewhere,
        env=env,
    )
    summary = json.loads((elsewhere / "run" / "metrics.jsonl").read_text().splitlines()[-1])["summary"]
    assert summary["steps"] == 2 and (elsewhere / "run" / "model" / "params.safetensors").is_file()
    # The conversion and export commands come with the install, and the `jaxqa` command runs each verb.
    for command in ("jaxqa-pt2flax", "jaxqa-flax2pt", "jaxqa-student", "jaxqa-export"):
        run([str(site / "bin" / command), "--help"], cwd=elsewhere, env=env)
    assert run([str(site / "bin" / "jaxqa"), "--help"], cwd=elsewhere, env=env).stdout.startswith("usage: jaxqa")
    plot = run([str(site / "bin" / "jaxqa"), "plot", "run", "--out", "curves.png"], cwd=elsewhere, env=env)
    assert plot.stdout == "wrote curves.png\n" and (elsewhere / "curves.png").is_file()
    # The recipes and the commands are the checkout's own files, each in one place.
    for folder, package in (("configs", "configs"), ("convert", "convert")):
        for source_file in (ROOT / folder).glob("*.py"):
            installed = site / "jaxqa" / package / source_file.name
            assert installed.read_bytes() == source_file.read_bytes(), installed
    assert not (ROOT / "jaxqa" / "configs").exists() and not (ROOT / "jaxqa" / "training" / "recipes").exists()
