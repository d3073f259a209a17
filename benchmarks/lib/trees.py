"""Other checkouts of jaxqa, for "before and after" comparisons: a git worktree
of a commit, and one measurement run in a fresh process that imports jaxqa from
a given tree, with no persistent compilation cache (every compile is cold)."""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from lib import paths


def worktree(commit: str) -> Path:
    """A checkout of `commit` beside the system's temporary files, made once."""
    path = Path(tempfile.gettempdir()) / f"jaxqa-{commit}"
    if not path.is_dir():
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(path), commit], cwd=paths.ROOT, check=True, capture_output=True
        )
    return path


def run_job(tree: Path, script: str, job: dict) -> dict:
    """What `script --job JOB` prints last (a JSON object), run with jaxqa from `tree`."""
    env = {**os.environ, "PYTHONPATH": str(tree), "JAX_PLATFORMS": "cpu"}
    env.pop("JAXQA_XLA_CACHE", None)
    result = subprocess.run(
        [sys.executable, script, "--job", json.dumps(job)], env=env, capture_output=True, text=True, check=False
    )
    if result.returncode:
        raise SystemExit(f"{job} failed in {tree}:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.splitlines()[-1])
