"""The checks that both export formats (`tests/test_export.py`, ONNX, and
`tests/test_export_litert.py`, LiteRT) make of an export, through jaxqa's own
serving: int8 near float32, and the pipeline over an export answering as
jaxqa does, and a tampered record refused."""

import json
import shutil

import numpy as np
import pytest
from random_models import windows

import jaxqa
from jaxqa import checkpoint
from jaxqa.export import write
from jaxqa.squad.examples import read_squad


def assert_int8_near_float32(exports: dict, vocab_size: int) -> None:
    """Over the real tokens of a few windows, the int8 export's logits stay
    within 5% of the float32 export's largest."""
    inputs = windows(vocab_size, 4, 64, seed=3)
    fp32, int8 = (np.stack(jaxqa.open_model(exports[p], "auto")(*inputs)) for p in write.PRECISIONS)
    real = np.broadcast_to(inputs[1] > 0, fp32.shape)
    assert np.abs(int8 - fp32)[real].max() < 0.05 * np.abs(fp32[real]).max()


def assert_int8_runs_near_float32(name, config, params, squad, out, fmt: str, **options) -> None:
    """A family's tiny model exported in `fmt` in float32 and int8: the int8
    export runs, within the bound of assert_int8_near_float32."""
    model_type = "bert" if name.startswith("compact-bert") else name
    folder = checkpoint.save_pretrained(out / name, model_type, config, params, squad.parent)
    assert_int8_near_float32(
        {p: write.export(folder, out / p, fmt, p, **options) for p in write.PRECISIONS}, config.vocab_size
    )


def assert_served_as_jaxqa(teacher, export, squad):
    """The pipeline over the float32 `export` of `teacher` gives jaxqa's answers and scores, compiling nothing."""
    questions = [
        {"question": example.question, "context": example.context} for example in read_squad(squad).examples[:12]
    ]
    ours = jaxqa.pipeline(teacher, precision="fp32", max_seq_len=64)(questions, top_k=2)
    served = jaxqa.pipeline(export, max_seq_len=64)
    assert served.precision == "fp32" and served.traces == 0
    theirs = served(questions, top_k=2)
    assert [[a["answer"] for a in q] for q in theirs] == [[a["answer"] for a in q] for q in ours]
    np.testing.assert_allclose(
        [a["score"] for q in theirs for a in q], [a["score"] for q in ours for a in q], rtol=1e-4
    )


def reversed_record_binds_by_name(export, tampered, extra: dict, length: int) -> dict:
    """Copies `export` to `tampered` with its record's inputs and outputs (and
    `extra`) in reverse order, checks that it gives the same logits (names bind
    the inputs and outputs, not their places), and returns the record."""
    shutil.copytree(export, tampered)
    record = json.loads((tampered / write.RECORD_FILE).read_text())
    flipped = {"inputs": record["inputs"][::-1], "outputs": record["outputs"][::-1], **extra}
    (tampered / write.RECORD_FILE).write_text(json.dumps({**record, **flipped}))
    inputs = windows(1000, 2, length)
    for got, want in zip(jaxqa.open_model(tampered, "auto")(*inputs), jaxqa.open_model(export, "auto")(*inputs)):
        np.testing.assert_array_equal(got, want)
    return record


def assert_records_refused(tampered, record: dict, cases) -> None:
    """Each (change, said) of `cases` made to `record` is refused in one line
    naming export.json and what `said` matches."""
    for change, said in cases:
        (tampered / write.RECORD_FILE).write_text(json.dumps({**record, **change}))
        with pytest.raises(jaxqa.Error, match=r"export.json: " + said) as refused:
            jaxqa.open_model(tampered, "auto")
        assert "\n" not in str(refused.value)
