"""The HTTP service in process (the app under Starlette's test client): every
endpoint, every refusal, the parameters, and answers equal to the pipeline's,
one at a time and many at once."""

import asyncio
import concurrent.futures
import json
import threading

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the service is the optional extra jaxqa[serve]")
from fastapi.testclient import TestClient

import jaxqa
from jaxqa import models
from jaxqa.serve.app import Limits, create_app
from jaxqa.serve.batcher import Job

CONTEXT = "The tower of gondor stands near ithil. The river of arda stands near harad."
QUESTION = "Where does the tower of gondor stand?"


@pytest.fixture(scope="module")
def qa(teacher):
    return jaxqa.pipeline(teacher, max_seq_len=64, batch_size=4, precision="fp32")


@pytest.fixture(scope="module")
def client(qa):
    with TestClient(create_app(qa, warm_up=False)) as client:
        yield client


def ask(client, inputs, **parameters):
    return client.post("/", json={"inputs": inputs, "parameters": parameters})


def assert_same(got, want):
    """Equal answers: text and offsets exactly, score to 1e-5."""
    if isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want)
        for g, w in zip(got, want):
            assert_same(g, w)
        return
    assert (got["answer"], got["start"], got["end"]) == (want["answer"], want["start"], want["end"])
    assert got["score"] == pytest.approx(want["score"], abs=1e-5)


@pytest.fixture(scope="module")
def squad_questions(squad) -> list[dict]:
    data = json.loads(squad.read_text())["data"]
    return [
        {"question": q["question"], "context": p["context"]} for a in data for p in a["paragraphs"] for q in p["qas"]
    ]


def test_answers_are_the_pipelines(client, qa):
    response = ask(client, {"question": QUESTION, "context": CONTEXT})
    assert response.status_code == 200
    assert_same(response.json(), qa(question=QUESTION, context=CONTEXT))
    for parameters in (
        {"top_k": 3},
        {"top_k": 2, "handle_impossible_answer": True, "max_answer_len": 3},
        {"align_to_words": False, "max_seq_len": 32, "doc_stride": 8, "max_question_len": 6},
        {"top_k": None},  # null: not given
    ):
        got = ask(client, {"question": QUESTION, "context": CONTEXT * 3}, **parameters).json()
        given = {name: value for name, value in parameters.items() if value is not None}
        assert_same(got, qa(question=QUESTION, context=CONTEXT * 3, **given))


def test_many_questions_on_one_context_and_lists_of_inputs(client, qa, squad_questions):
    questions = [QUESTION, "Where does the river of arda stand?", "Where?"]
    got = ask(client, {"question": questions, "context": CONTEXT}, top_k=2).json()
    assert_same(got, qa(question=questions, context=CONTEXT, top_k=2))
    inputs = squad_questions[:7]
    assert_same(ask(client, inputs).json(), qa(inputs))
    assert ask(client, []).json() == []


def test_answers_from_many_clients_at_once_are_the_pipelines(client, qa, squad_questions):
    questions = squad_questions[:40]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda item: ask(client, item).json(), questions))
    assert_same(got, [qa(item) for item in questions])
    # They shared calls of the model: fewer calls than requests.
    text = client.get("/metrics").text
    calls = float(next(line.split()[1] for line in text.splitlines() if line.startswith("jaxqa_batch_windows_count")))
    assert calls < len(questions)


def test_health_ready_info_metrics_openapi_and_the_page(client, qa):
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"ready": True}  # nothing to compile first
    info = client.get("/info").json()
    assert info["family"] == "bert" and info["precision"] == "fp32" and info["runtime"] == "xla"
    assert info["seq_buckets"] == [32, 64] and info["batch_sizes"] == [1, 2, 4] and info["max_seq_len"] == 64
    assert info["limits"]["max_queued_requests"] == 256 and "jax" in info["versions"]
    ask(client, {"question": QUESTION, "context": CONTEXT})
    ask(client, {"question": 3, "context": CONTEXT})
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    for name in (
        'jaxqa_requests_total{status="200"}',
        'jaxqa_requests_total{status="422"}',
        "jaxqa_request_seconds_count",
        "jaxqa_queue_depth",
        "jaxqa_batch_windows_count",
        "jaxqa_windows_total",
        "jaxqa_real_tokens_total",
        "jaxqa_padded_tokens_total",
    ):
        assert name in metrics.text, name
    schema = client.get("/openapi.json").json()
    assert "post" in schema["paths"]["/"] and "Query" in schema["components"]["schemas"]
    page = client.get("/")
    assert (
        page.status_code == 200
        and '<textarea id="context"' in page.text
        and "http" not in page.text.split("<script>")[1]
    )


@pytest.mark.parametrize(
    "body, status, fault",
    [
        ("{not json", 422, "JSON decode error"),
        ({"question": QUESTION, "context": CONTEXT}, 422, "inputs: Field required"),
        ({"inputs": {"context": CONTEXT}}, 422, "inputs.Question.question: Field required"),
        ({"inputs": {"question": 3, "context": CONTEXT}}, 422, "inputs.Question.question"),
        ({"inputs": {"question": QUESTION, "context": CONTEXT}, "parameters": {"top_k": "3"}}, 422, "parameters.top_k"),
        ({"inputs": {"question": QUESTION, "context": CONTEXT}, "parameters": {"topk": 3}}, 422, "parameters.topk"),
        ({"inputs": {"question": QUESTION, "context": CONTEXT}, "parameters": {"top_k": 0}}, 400, "top_k=0"),
        (
            {"inputs": {"question": QUESTION, "context": CONTEXT}, "parameters": {"max_seq_len": 512}},
            400,
            "max_seq_len 512",
        ),
        (
            {"inputs": {"question": QUESTION, "context": CONTEXT}, "parameters": {"doc_stride": 64}},
            400,
            "doc_stride 64",
        ),
        ({"inputs": {"question": QUESTION, "context": ""}}, 400, "input 0: the context must be a non-empty string"),
        ({"inputs": {"question": "", "context": CONTEXT}}, 400, "input 0: the question must be a non-empty string"),
        ({"inputs": {"question": QUESTION, "context": "\u200b\u200b"}}, 400, "input 0: the context has no tokens"),
    ],
)
def test_each_fault_is_one_line_naming_it(client, body, status, fault):
    if isinstance(body, str):
        response = client.post("/", content=body, headers={"content-type": "application/json"})
    else:
        response = client.post("/", json=body)
    assert response.status_code == status, response.text
    error = response.json()
    assert fault in error["error"] and "\n" not in error["error"] and error["error_type"], error


def test_control_characters_and_any_unicode_are_answered(client, qa):
    for context in (
        CONTEXT + "\x00\x07\x1b",
        "Der Turm von Gondor steht bei Ithil 🏰. 塔は近くにある.",
        "\ud7ff" * 3 + CONTEXT,
    ):
        response = ask(client, {"question": QUESTION, "context": context})
        assert response.status_code == 200
        assert_same(response.json(), qa(question=QUESTION, context=context))


def test_payload_and_context_limits(qa):
    with TestClient(create_app(qa, Limits(max_payload_bytes=1000, max_context_tokens=40), warm_up=False)) as client:
        big = ask(client, {"question": QUESTION, "context": CONTEXT * 20})
        assert big.status_code == 413 and "over 1000 bytes" in big.json()["error"]
        long = ask(client, {"question": QUESTION, "context": CONTEXT * 3})
        assert long.status_code == 413 and "more than 40" in long.json()["error"]
        assert ask(client, {"question": QUESTION, "context": CONTEXT}).status_code == 200


class Held:
    """An engine that waits for `release` before each call of the model it wraps."""

    def __init__(self, engine):
        self.engine, self.release, self.calls = engine, threading.Event(), 0

    def __call__(self, *windows):
        self.calls += 1
        self.release.wait(30)
        return self.engine(*windows)

    def __getattr__(self, name):
        return getattr(self.engine, name)


def test_a_full_queue_refuses_with_retry_after_and_loses_no_accepted_request(teacher, qa):
    held_qa = jaxqa.pipeline(teacher, max_seq_len=64, batch_size=4, precision="fp32")
    held_qa.engine = held = Held(held_qa.engine)
    with TestClient(create_app(held_qa, Limits(max_queued_requests=1), warm_up=False)) as client:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            running = pool.submit(ask, client, {"question": QUESTION, "context": CONTEXT})
            while held.calls == 0:  # the first request is in the model
                threading.Event().wait(0.01)
            queued = pool.submit(ask, client, {"question": "Where?", "context": CONTEXT})
            while client.get("/metrics").text.find("jaxqa_queue_depth 1.0") < 0:
                threading.Event().wait(0.01)
            refused = ask(client, {"question": QUESTION, "context": CONTEXT})
            assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
            # The model is busy, and the event loop is not: health and metrics answer.
            assert client.get("/health").status_code == 200 and client.get("/metrics").status_code == 200
            assert "queue holds 1" in refused.json()["error"]
            held.release.set()
            assert_same(running.result().json(), qa(question=QUESTION, context=CONTEXT))
            assert_same(queued.result().json(), qa(question="Where?", context=CONTEXT))


def test_a_request_past_its_time_gets_504_and_its_windows_are_dropped(teacher):
    held_qa = jaxqa.pipeline(teacher, max_seq_len=64, batch_size=4, precision="fp32")
    held_qa.engine = held = Held(held_qa.engine)
    with TestClient(create_app(held_qa, Limits(timeout_s=0.3), warm_up=False)) as client:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            first = pool.submit(ask, client, {"question": QUESTION, "context": CONTEXT})
            late = ask(client, {"question": "Where?", "context": CONTEXT})  # queued behind the held call
            assert late.status_code == 504 and "no answer within 0.3s" in late.json()["error"]
            assert first.result().status_code == 504
            held.release.set()
        while not client.app.state.batcher.idle:  # the first request's call, which had begun, ends
            threading.Event().wait(0.01)
        assert ask(client, {"question": QUESTION, "context": CONTEXT}).status_code == 200
        assert held.calls == 2  # the first request's call and the last one's: the dropped one never ran


def test_ready_only_after_every_bucket_compiled(teacher):
    models.forward.cache_clear()  # a forward of its own, from nothing compiled
    fresh = jaxqa.pipeline(teacher, max_seq_len=64, batch_size=2, precision="fp32")
    fresh.engine = held = Held(fresh.engine)
    with TestClient(create_app(fresh)) as client:
        assert client.get("/ready").status_code == 503 and client.get("/health").status_code == 200
        held.release.set()
        for _ in range(500):
            if client.get("/ready").status_code == 200:
                break
            threading.Event().wait(0.02)
        assert client.get("/ready").json() == {"ready": True}
        assert fresh.traces == 4  # 2 lengths x 2 batch sizes


def test_the_service_is_a_jaxqa_verb():
    from jaxqa import cli

    assert cli.VERBS["serve"][0] == "jaxqa.serve.command"


def test_bad_flags_are_refused_in_one_line(capsys, teacher):
    from jaxqa.serve import command

    for flags, message in (
        (["--max-queued-requests", "0"], "--max-queued-requests 0: must be at least 1"),
        (["--timeout", "0"], "--timeout 0.0: must be positive"),
        (["--port", "70000"], "--port 70000: must be 1 to 65535"),
    ):
        assert command.main([str(teacher), *flags]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
    assert command.main(["/no/such/folder"]) == 2
    assert "/no/such/folder" in capsys.readouterr().err


def test_a_client_that_leaves_has_its_windows_dropped():
    from jaxqa.serve.app import Refused, _answered

    class Left:
        """A request whose client has gone: its next message is the disconnect."""

        async def receive(self):
            return {"type": "http.disconnect"}

    async def wait_for_one_that_left():
        job = Job((np.zeros((1, 8)),) * 3, 8, 8, asyncio.get_running_loop().create_future())
        with pytest.raises(Refused, match="the client left"):
            await _answered(job, Left(), timeout=30)
        return job

    job = asyncio.run(wait_for_one_that_left())
    assert job.done.cancelled()  # the batcher passes over it: its windows never run
