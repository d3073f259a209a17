"""The loop of a run: the train step compiled over the mesh, the batch of every
step, the steps themselves with the hooks called after each (`hooks`), how
fast they go, and the signals that stop them."""

import contextlib
import dataclasses
import logging
import signal
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import jax
import jax.numpy as jnp

from jaxqa import sharding
from jaxqa.models.encoder import SpanModel
from jaxqa.squad.features import TrainFeatures
from jaxqa.training import batches
from jaxqa.training.model import Teacher
from jaxqa.training.plan import Plan
from jaxqa.training.settings import OptimizationSettings
from jaxqa.training.state import Layout, TrainState
from jaxqa.training.step import Distillation, make_train_step

log = logging.getLogger("jaxqa.train")

# A step: (the state, this process's share of the step's batch) -> (the next state, its metrics).
Step = Callable[[TrainState, dict], tuple[TrainState, dict]]


def compile_step(module: SpanModel, plan: Plan, layout: Layout, seed: int, teacher: Teacher | None) -> Step:
    """The train step, compiled over the layout's mesh: each process hands in its
    share of the batch; the teacher, if any, is frozen, in the student's compute
    precision and sharded over the same mesh."""
    distill, teacher_params, teacher_sh = None, {}, {}
    if teacher:
        teacher_module = SpanModel(teacher.source.config, module.dtype, jnp.float32, module.execution)
        teacher_sh = layout.shardings_of(teacher_module)
        teacher_params = jax.device_put(teacher.params, teacher_sh)
        distill = Distillation(teacher_module, teacher.alpha, teacher.temperature)
        log.info(f"distilling from the {teacher.source.model_type} teacher {teacher.source.folder} "
                 f"(alpha {teacher.alpha}, temperature {teacher.temperature})")  # fmt: skip
    mesh = layout.mesh
    batch_sh = {key: sharding.batch_sharding(mesh, ndim, leading=1) for key, ndim in batches.TRAIN_NDIMS.items()}
    step = jax.jit(
        make_train_step(module, plan.tx, seed, distill, plan.prune, plan.score_tx),
        in_shardings=(layout.state_sh, batch_sh, teacher_sh),
        out_shardings=(layout.state_sh, sharding.replicated(mesh)),
        donate_argnums=0,
    )
    return lambda state, local: step(state, sharding.global_batch(local, mesh, leading=1), teacher_params)


@dataclasses.dataclass(frozen=True)
class Feed:
    """The batch of every step: this process's share of it, and the real tokens
    (not padding) of the whole."""

    train: TrainFeatures
    optimization: OptimizationSettings  # the batch size, micro-batches and seed
    length_step: int

    def __call__(self, step: int) -> tuple[dict, int]:
        o = self.optimization
        rows = batches.step_rows(self.train, step, o.batch_size, o.seed, self.length_step)
        local = batches.train_batch(
            self.train, rows, o.grad_accum, self.length_step, jax.process_index(), jax.process_count()
        )
        return local, int(batches.lengths(self.train)[rows].sum())


class Hook(Protocol):
    """What the loop calls after each step (and decides by its own `every`
    whether to act), and once when the loop ends, by a stop or at the last step."""

    def after_step(self, step: int, state: TrainState, metrics: dict) -> None: ...

    def at_end(self, state: TrainState) -> None: ...


@dataclasses.dataclass
class Throughput:
    """Sequences and real tokens (not padding) per second: over the window since
    the last log line, and steady (after the first step, which compiles); and the
    run's time from its first step to the end of its loop."""

    batch_size: int
    compile_seconds: float | None = None
    started: float = dataclasses.field(default_factory=time.perf_counter)
    ended: float | None = None
    window_start: float = dataclasses.field(default_factory=time.perf_counter)
    window_steps: int = 0
    window_tokens: int = 0
    steady_start: float = 0.0
    steady_steps: int = 0
    steady_tokens: int = 0

    def stepped(self, tokens: int, started: float, metrics) -> None:
        """A step of `tokens` real tokens, dispatched at `started`, gave `metrics`."""
        if self.compile_seconds is None:
            jax.block_until_ready(metrics)
            self.compile_seconds = time.perf_counter() - started
            log.info(f"train step compiled and ran once in {self.compile_seconds:.1f}s")
            self.window_start = self.steady_start = time.perf_counter()
            return
        self.window_steps += 1
        self.window_tokens += tokens
        self.steady_steps += 1
        self.steady_tokens += tokens

    def window(self) -> dict:
        """Rates since the last call (None before a step was timed)."""
        elapsed = max(time.perf_counter() - self.window_start, 1e-9)
        steps, tokens = self.window_steps, self.window_tokens
        self.window_start, self.window_steps, self.window_tokens = time.perf_counter(), 0, 0
        return {
            "seq_per_s": steps * self.batch_size / elapsed if steps else None,
            "tokens_per_s": tokens / elapsed if steps else None,
        }

    def summary(self) -> dict:
        """The run's time, its compile time and its steady rates, once the loop has ended."""
        assert self.ended is not None, "the loop has ended"
        steady: dict = {"seq_per_s": None, "tokens_per_s": None}
        if self.steady_steps:
            elapsed = self.ended - self.steady_start
            steady = {
                "seq_per_s": round(self.steady_steps * self.batch_size / elapsed, 2),
                "tokens_per_s": round(self.steady_tokens / elapsed),
            }
        return {
            "wall_seconds": round(self.ended - self.started, 1),
            "compile_seconds": round(self.compile_seconds or 0, 1),
            **steady,
        }


@dataclasses.dataclass
class Stop:
    signal: int | None = None  # the signal that asked the run to stop


@contextlib.contextmanager
def signals_caught():
    """Within the block, SIGTERM and SIGINT ask the run to stop (after the step
    under way) instead of killing it; the handlers before it come back after it."""
    stop = Stop()
    caught = (signal.SIGTERM, signal.SIGINT)
    before = {signum: signal.signal(signum, lambda num, _: setattr(stop, "signal", num)) for signum in caught}
    try:
        yield stop
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


def loop(
    state: TrainState, step_fn: Step, feed: Feed, total: int, hooks: Sequence[Hook], throughput: Throughput, stop: Stop
) -> TrainState:
    """Steps from the state's step to `total`, or until a signal asks `stop`,
    calling each hook after each step and at the end."""
    step = int(state.step)
    while step < total and stop.signal is None:
        local, tokens = feed(step)
        started = time.perf_counter()
        state, metrics = step_fn(state, local)
        step += 1
        throughput.stepped(tokens, started, metrics)
        for hook in hooks:
            hook.after_step(step, state, metrics)
    throughput.ended = time.perf_counter()
    for hook in hooks:
        hook.at_end(state)
    return state
