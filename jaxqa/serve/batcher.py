"""Dynamic batching: the windows of many requests run in one call of the model.

A request's windows wait in a bounded queue (`submit`; past `max_queued`,
`QueueFull`, which the app answers 503). The batcher (`run`, a task on the event
loop) takes waiting requests in order until their windows reach
`max_batch_tokens` (each window counted at the length bucket it runs at, as
Text Embeddings Inference counts its batches), waiting at most `max_wait`
seconds for more after the first, and hands them to the one worker thread
that owns the model, which runs them through the engine (`jaxqa.engine`: sorted
by length, in batches of the compiled shapes). The event loop stays free while
the model runs, so that health checks and metrics answer at once. A window's
logits do not depend on the windows it ran with (docs/design.md), so batching
never changes an answer.
"""

import asyncio
import collections
import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from jaxqa.engine import Engine
from jaxqa.errors import Error
from jaxqa.serve.metrics import Metrics
from jaxqa.squad import buckets


class QueueFull(Error):
    """The queue holds as many requests as it may; the request is refused, not queued."""


@dataclasses.dataclass(eq=False)
class Job:
    """One request's windows (ids, mask, token types, each (n, L) padded to the
    largest bucket) and where their logits go, (n, width) each."""

    windows: tuple[np.ndarray, np.ndarray, np.ndarray]
    width: int  # the windows' length as the request cut them
    tokens: int  # the windows' length buckets, summed
    done: asyncio.Future

    def drop(self) -> None:
        """The request is gone (timed out, or its client left): its windows are not run."""
        self.done.cancel()


class Batcher:
    def __init__(
        self, engine: Engine, max_batch_tokens: int, max_wait: float, max_queued: int, metrics: Metrics
    ) -> None:
        self.engine = engine
        self.max_batch_tokens, self.max_wait, self.max_queued = max_batch_tokens, max_wait, max_queued
        self.metrics = metrics
        self.waiting: collections.deque[Job] = collections.deque()
        self.arrived = asyncio.Event()
        self.worker = ThreadPoolExecutor(1, thread_name_prefix="jaxqa-model")  # the one thread that runs the model
        self.running = 0  # windows in the model now

    @property
    def idle(self) -> bool:
        return not self.waiting and not self.running

    def submit(self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray) -> Job:
        """Queues a request's windows, (n, L) each with L at most the largest bucket."""
        if len(self.waiting) >= self.max_queued:
            raise QueueFull(f"the queue holds {self.max_queued} requests already; try again shortly")
        width = self.engine.seq_buckets[-1]
        padded = tuple(
            np.pad(a, ((0, 0), (0, width - a.shape[1]))) for a in (input_ids, attention_mask, token_type_ids)
        )
        tokens = int(buckets.fit(self.engine.seq_buckets, attention_mask.sum(axis=1)).sum())
        job = Job(padded, input_ids.shape[1], tokens, asyncio.get_running_loop().create_future())  # type: ignore[arg-type]
        self.waiting.append(job)
        self.metrics.queue_depth.set(len(self.waiting))
        self.arrived.set()
        return job

    async def run(self) -> None:
        """Cuts batches from the queue and runs them, until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._collect()
            windows = [np.concatenate(parts) for parts in zip(*(job.windows for job in jobs))]
            self._count(windows[1])
            self.running = len(windows[0])
            try:
                start, end = await loop.run_in_executor(self.worker, self.engine, windows[0], windows[1], windows[2])
            except Exception as err:  # the model failed: every request of the batch hears it
                for job in jobs:
                    if not job.done.done():
                        job.done.set_exception(err)
                continue
            finally:
                self.running = 0
            first = 0
            for job in jobs:
                n = len(job.windows[0])
                if not job.done.done():
                    job.done.set_result((start[first : first + n, : job.width], end[first : first + n, : job.width]))
                first += n

    async def _collect(self) -> list[Job]:
        """The next batch: waiting requests in order, within the token budget
        (the first one whatever its size), after at most `max_wait` for more."""
        jobs: list[Job] = []
        tokens, deadline = 0, 0.0
        while True:
            while self.waiting and (not jobs or tokens + self.waiting[0].tokens <= self.max_batch_tokens):
                job = self.waiting.popleft()
                if not job.done.done():  # not dropped
                    jobs.append(job)
                    tokens += job.tokens
            self.metrics.queue_depth.set(len(self.waiting))
            full = self.waiting or tokens >= self.max_batch_tokens
            if jobs and not deadline:
                deadline = time.monotonic() + self.max_wait
            if jobs and (full or time.monotonic() >= deadline):
                return jobs
            self.arrived.clear()
            try:
                timeout = max(deadline - time.monotonic(), 0.0) if jobs else None
                await asyncio.wait_for(self.arrived.wait(), timeout)
            except TimeoutError:
                pass

    def _count(self, attention_mask: np.ndarray) -> None:
        lengths = attention_mask.sum(axis=1)
        self.metrics.batch_windows.observe(len(lengths))
        self.metrics.windows.inc(len(lengths))
        self.metrics.real_tokens.inc(int(lengths.sum()))
        self.metrics.padded_tokens.inc(sum(width * size for _, width, size in self.engine.batches(lengths)))
