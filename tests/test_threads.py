"""One pipeline called from many threads at once gives each question the
answers that it gets called serially, whatever runs the model: XLA, ONNX
Runtime or the LiteRT interpreter."""

from concurrent.futures import ThreadPoolExecutor

import pytest

import jaxqa
from jaxqa.export import write
from jaxqa.squad.examples import read_squad


@pytest.fixture(scope="module", params=["xla", "onnx", "litert"])
def model(request, teacher, tmp_path_factory):
    """The teacher, or its float32 export in a format (one LiteRT signature, 64 tokens)."""
    if request.param == "xla":
        return teacher
    pytest.importorskip({"onnx": "onnxruntime", "litert": "litert_converter"}[request.param])
    options = {"length": 64, "length_step": 64} if request.param == "litert" else {}
    return write.export(teacher, tmp_path_factory.mktemp(request.param) / "export", request.param, **options)


def test_threads_get_the_answers_of_serial_calls(model, squad):
    questions = [{"question": e.question, "context": e.context} for e in read_squad(squad).examples]
    qa = jaxqa.pipeline(model, precision="fp32", max_seq_len=64, doc_stride=32)
    serial = [qa(question, top_k=2) for question in questions]
    with ThreadPoolExecutor(8) as pool:
        threaded = list(pool.map(lambda question: qa(question, top_k=2), questions))
    assert len({answers[0]["answer"] for answers in serial}) > 1  # questions that a mix-up would show
    assert threaded == serial
