"""The service as an ASGI app: `create_app(pipeline, limits)` builds it, so that
uvicorn (`jaxqa serve`), tests and hosts such as Ray Serve mount the same app.

    POST /          a question in the Hugging Face inference JSON (`requests`)
    GET  /          a demo page: question, context, the answer highlighted
    GET  /health    alive
    GET  /ready     ready: every length bucket compiled, and not draining
    GET  /metrics   Prometheus (`metrics`)
    GET  /info      the model, its runtime and precision and why (`choice`), buckets, limits, versions
    GET  /openapi.json

Every refusal is JSON, `{"error": one line naming the fault, "error_type": ...}`:
400 a value the pipeline refuses, 413 a payload or context past its limit,
422 JSON that is not a request, 503 a full queue or a draining server (with
Retry-After), 504 a request that ran out of time. A request whose client
leaves has its queued windows dropped.
"""

import asyncio
import contextlib
import dataclasses
import importlib.metadata
import logging
import time
from pathlib import Path

import numpy as np
from fastapi import APIRouter, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response

from jaxqa.errors import Error
from jaxqa.pipeline import QuestionAnsweringPipeline
from jaxqa.serve.batcher import Batcher, QueueFull
from jaxqa.serve.metrics import CONTENT_TYPE, Metrics
from jaxqa.serve.requests import Answer, Query, asked

log = logging.getLogger("jaxqa.serve")
PAGE = Path(__file__).with_name("page.html")


@dataclasses.dataclass(frozen=True)
class Limits:
    """What the service takes on (the flags of `jaxqa serve`)."""

    max_batch_tokens: int = 8192  # tokens (windows at their length buckets) per call of the model
    max_wait_ms: float = 0.0  # how long a batch waits for more requests after its first (0: takes what waits)
    max_queued_requests: int = 256  # past it: 503
    max_payload_bytes: int = 2_000_000  # past it: 413
    max_context_tokens: int = 16_384  # a request's context tokens, all its contexts together; past it: 413
    timeout_s: float = 60.0  # from arrival to answer; past it: 504
    retry_after_s: int = 1  # what a 503 asks the client to wait


class Refused(Error):
    """A request the service does not answer; `status` is its HTTP status."""

    def __init__(self, status: int, message: str, kind: str):
        super().__init__(message)
        self.status, self.kind = status, kind


def refusal(status: int, message: str, kind: str, retry_after: int | None = None) -> JSONResponse:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse({"error": " ".join(message.split()), "error_type": kind}, status, headers=headers)


def create_app(qa: QuestionAnsweringPipeline, limits: Limits = Limits(), warm_up: bool = True) -> FastAPI:
    """The app over `qa`, a pipeline whose largest batch is the most windows one
    call of the model runs. With `warm_up`, every length bucket and batch size
    compiles at start-up, off the event loop, before `/ready` says ready. What
    the routes share lives in `app.state`: the pipeline, the limits, the
    metrics, whether it is ready or draining (`serving`), and the batcher."""
    app = FastAPI(
        title="jaxqa", summary="Extractive question answering", lifespan=_lifespan, docs_url=None, redoc_url=None
    )
    app.state.qa, app.state.limits, app.state.metrics, app.state.warm_up = qa, limits, Metrics(), warm_up
    app.state.serving = {"ready": False, "draining": False}
    app.middleware("http")(_at_the_door)
    app.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]
    app.add_exception_handler(Refused, _refused)  # type: ignore[arg-type]
    app.include_router(routes)
    return app


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI):
    """Starts the batcher and the warm-up; at the end, answers every request accepted before going."""
    s = app.state
    s.batcher = batcher = Batcher(
        s.qa.engine, s.limits.max_batch_tokens, s.limits.max_wait_ms / 1000, s.limits.max_queued_requests, s.metrics
    )
    task = asyncio.create_task(batcher.run())
    compiled = asyncio.get_running_loop().run_in_executor(batcher.worker, _warm_up if s.warm_up else _nothing, s.qa)

    def warm(done: asyncio.Future) -> None:
        if done.cancelled() or done.exception() is not None:
            log.error(f"warm-up failed: {done.exception() if not done.cancelled() else 'cancelled'}")
        else:
            s.serving["ready"] = not s.serving["draining"]

    compiled.add_done_callback(warm)
    yield
    s.serving.update(draining=True, ready=False)
    while not batcher.idle:
        await asyncio.sleep(0.01)
    task.cancel()
    batcher.worker.shutdown(wait=False, cancel_futures=True)


async def _at_the_door(request: Request, call_next) -> Response:
    """Refuses what a draining server or the payload limit does not take; counts the questions asked."""
    s, started = request.app.state, time.perf_counter()
    if request.method == "POST" and s.serving["draining"]:
        response: Response = refusal(503, "the server is shutting down", "unavailable", s.limits.retry_after_s)
    elif int(request.headers.get("content-length") or 0) > s.limits.max_payload_bytes:
        response = refusal(413, f"the payload is over {s.limits.max_payload_bytes} bytes", "payload_too_large")
    else:
        response = await call_next(request)
    if request.url.path == "/" and request.method == "POST":
        s.metrics.requests.labels(str(response.status_code)).inc()
        s.metrics.latency.observe(time.perf_counter() - started)
    return response


async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
    first = err.errors()[0]
    where = ".".join(str(part) for part in first["loc"] if part != "body") or "body"
    return refusal(422, f"{where}: {first['msg']}", "validation")


async def _refused(request: Request, err: Refused) -> JSONResponse:
    return refusal(
        err.status, str(err), err.kind, request.app.state.limits.retry_after_s if err.status == 503 else None
    )


routes = APIRouter()


# The answer goes out as the pipeline gives it; the model documents its form.
@routes.post("/", response_model=None, responses={200: {"model": Answer | list[Answer] | list[list[Answer]]}})
async def answer(query: Query, request: Request):
    """Answers as `jaxqa.pipeline` does; the same JSON as Hugging Face's inference API."""
    s = request.app.state
    try:
        question = asked(s.qa, query)
        features = await run_in_threadpool(_featurize, s.qa, question, s.limits.max_context_tokens)
    except Refused:
        raise
    except Error as err:
        raise Refused(400, str(err), "bad_request") from None
    if not question.pairs:
        return []
    try:
        job = s.batcher.submit(features.input_ids, features.attention_mask, features.token_type_ids)
    except QueueFull as err:
        raise Refused(503, str(err), "overloaded") from None
    logits = await _answered(job, request, s.limits.timeout_s)
    return await run_in_threadpool(s.qa.answer, question, features, *logits)


@routes.get("/", response_class=HTMLResponse, include_in_schema=False)
async def page() -> HTMLResponse:
    return HTMLResponse(PAGE.read_text())


@routes.get("/health")
async def health() -> dict:
    return {"status": "ok"}


@routes.get("/ready")
async def ready(request: Request) -> JSONResponse:
    is_ready = request.app.state.serving["ready"]
    return JSONResponse({"ready": is_ready}, 200 if is_ready else 503)


@routes.get("/metrics", include_in_schema=False)
async def prometheus(request: Request) -> Response:
    return Response(request.app.state.metrics.text(), media_type=CONTENT_TYPE)


@routes.get("/info")
async def info(request: Request) -> dict:
    return _info(request.app.state.qa, request.app.state.limits)


def _nothing(qa: QuestionAnsweringPipeline) -> None:
    pass


def _warm_up(qa: QuestionAnsweringPipeline) -> None:
    started = time.perf_counter()
    for length in qa.engine.seq_buckets:
        qa.warm_up(seq_buckets=[length])
        log.info(f"warm-up: windows of {length} tokens compiled ({time.perf_counter() - started:.1f}s)")
    log.info(f"ready: {qa.traces} programs compiled in {time.perf_counter() - started:.1f}s")


def _featurize(qa: QuestionAnsweringPipeline, question, max_context_tokens: int):
    """The windows of a request, after refusing one whose contexts hold more tokens than `max_context_tokens`."""
    contexts = list(dict.fromkeys(context for _, context in question.pairs))
    tokens = sum(len(encoding.ids) for encoding in qa.model.tokenizer.encode_batch(contexts, add_special_tokens=False))
    if tokens > max_context_tokens:
        raise Refused(413, f"the contexts hold {tokens} tokens, more than {max_context_tokens}", "payload_too_large")
    return qa.featurize(question)


async def _answered(job, request: Request, timeout: float) -> tuple[np.ndarray, np.ndarray]:
    """The job's logits; a job whose client leaves, or that outlasts `timeout`, is dropped."""

    async def client_left() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    left = asyncio.ensure_future(client_left())
    try:
        done, _ = await asyncio.wait({job.done, left}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        left.cancel()
    if job.done in done:
        return job.done.result()
    job.drop()
    if left in done:
        raise Refused(499, "the client left before its answer", "client_closed")
    raise Refused(504, f"no answer within {timeout:g}s", "timeout")


def _info(qa: QuestionAnsweringPipeline, limits: Limits) -> dict:
    model = qa.model
    versions = {name: importlib.metadata.version(name) for name in ("jaxqa", "jax", "flax", "tokenizers")}
    return {
        "family": model.model_type,
        "folder": str(model.folder),
        "precision": model.precision,
        "runtime": model.runtime.name,
        "choice": qa.info,
        "seq_buckets": list(qa.engine.seq_buckets),
        "batch_sizes": list(qa.engine.batch_sizes),
        "max_seq_len": qa.settings.max_seq_length,
        "doc_stride": qa.settings.doc_stride,
        "max_question_len": qa.settings.max_query_length,
        "limits": dataclasses.asdict(limits),
        "versions": versions,
    }
