"""What hangs on the loop (`loop.Hook`): after each step, each hook decides by
its own `every` whether to act. `Log` writes the metrics (and stops a run whose
loss is no longer finite), `Evaluate` scores the model and keeps the best, and
`Save` writes the checkpoints."""

import dataclasses
from collections.abc import Callable

import jax
from jax.sharding import Mesh
from tqdm import tqdm

from jaxqa import evaluate
from jaxqa.errors import Error
from jaxqa.models.encoder import SpanModel
from jaxqa.training.batches import EvalSet
from jaxqa.training.loop import Throughput
from jaxqa.training.plan import Plan
from jaxqa.training.run_folder import MetricsLog, RunFolder
from jaxqa.training.settings import EvaluationSettings
from jaxqa.training.state import TrainState


class TrainingError(Error):
    """A run that cannot go on; the message says which step or flag."""


@dataclasses.dataclass
class Log:
    """Every `every` steps and at the last: the step's metrics, learning rate and
    throughput, to the metrics log and the progress bar, once the run is known
    to be sound (a non-finite loss or gradient stops it, saved at the step
    before); the bar moves on every step, from `first_step`."""

    every: int
    plan: Plan
    throughput: Throughput
    metrics: MetricsLog
    folder: RunFolder
    first_step: dataclasses.InitVar[int]
    bar: tqdm = dataclasses.field(init=False)

    def __post_init__(self, first_step: int):
        if first_step:  # the steps after the checkpoint a stopped run left are logged again from here
            self.metrics.write({"resumed_from_step": first_step})
        self.bar = tqdm(
            total=self.plan.total_steps,
            initial=first_step,
            disable=jax.process_index() != 0,
            unit="step",
            dynamic_ncols=True,
        )

    def after_step(self, step: int, state: TrainState, metrics: dict) -> None:
        if step % self.every == 0 or step == self.plan.total_steps:
            self._write(step, state, metrics)
            self.folder.check()
        self.bar.update(1)

    def at_end(self, state: TrainState) -> None:
        self.bar.close()

    def _write(self, step: int, state: TrainState, metrics: dict) -> None:
        metrics, bad_step = jax.device_get((metrics, state.bad_step))
        if bad_step >= 0:
            self.folder.save(int(state.step), state, force=True)
            self.folder.wait()
            raise TrainingError(
                f"non-finite loss or gradient at step {int(bad_step)}; the checkpoint of step "
                f"{int(state.step)} in {self.folder.directory} holds the state before it"
            )
        record = {
            "step": step,
            **{key: float(value) for key, value in metrics.items()},
            "learning_rate": float(self.plan.lr(step - 1)),
            **self.throughput.window(),
        }
        self.metrics.write(record)
        self.bar.set_postfix(
            loss=f"{record['loss']:.3f}",
            lr=f"{record['learning_rate']:.2e}",
            seq_s=f"{record['seq_per_s'] or 0:.1f}",
            tok_s=f"{record['tokens_per_s'] or 0:.0f}",
        )


def evaluator(
    module: SpanModel, eval_set: EvalSet | None, mesh: Mesh, e: EvaluationSettings, length_step: int
) -> Callable[[dict], dict]:
    """Parameters -> their official metrics on `eval_set` ({} without one)."""
    if eval_set is None:
        return lambda params: {}
    return lambda params: evaluate.evaluate_params(
        module, params, eval_set, mesh, e.batch_size, e.null_score_diff_threshold, length_step
    )


@dataclasses.dataclass
class Evaluate:
    """Every `every` steps before the last of `total` (0: never), the model a
    state stands for (`state.model_of`) is scored, the metrics logged and the
    best model so far kept in RUN/best; `final` does the same for the final model."""

    every: int
    total: int
    model_of: Callable[[TrainState], tuple[dict, float]]
    scores: Callable[[dict], dict]  # parameters -> metrics (`evaluator`)
    metrics: MetricsLog
    folder: RunFolder

    def after_step(self, step: int, state: TrainState, metrics: dict) -> None:
        if self.every and step % self.every == 0 and step < self.total:
            params = self.model_of(state)[0]
            self._record(step, params, self.scores(params))

    def at_end(self, state: TrainState) -> None:
        pass

    def final(self, step: int, params: dict) -> dict:
        """The final model's metrics ({} without an evaluation set), logged, and
        the model kept in RUN/best if it is the best."""
        result = self.scores(params)
        if result:
            self._record(step, params, result)
        return result

    def _record(self, step: int, params: dict, result: dict) -> None:
        self.metrics.write({"step": step, **result})
        self.folder.keep_best(params, result, step)


@dataclasses.dataclass
class Save:
    """Every `every` steps, a checkpoint, waited for, so that a save that fails
    (a full disk) stops the run at its own step; at the end, the last one."""

    every: int
    folder: RunFolder

    def after_step(self, step: int, state: TrainState, metrics: dict) -> None:
        if step % self.every == 0:
            self.folder.save(step, state)
            self.folder.wait()

    def at_end(self, state: TrainState) -> None:
        self.folder.save(int(state.step), state, force=True)
        self.folder.wait()
