"""Fine-tunes BERT, SqueezeBERT, MobileBERT or DistilBERT on SQuAD 1.1 or 2.0,
distilling from a teacher and pruning (BERT) if asked.

    python -m jaxqa.train --model squeezebert [--config squeezebert:tiny] [--init DIR] [--train-file F] ...

Sharded with one `jax.jit` over a (data, model) device mesh; resumable from the
run folder after any interruption; evaluated with the official metric.
"""

import contextlib
import dataclasses
import json
import logging
import math
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh
from tokenizers import Tokenizer
from tqdm import tqdm

from jaxqa import compilation_cache, evaluate, models, precision, sharding
from jaxqa.checkpoint import Source, open_checkpoint, params_digest
from jaxqa.errors import Error, log_to, write_file
from jaxqa.models import bert, compact, execution, stacking
from jaxqa.models.encoder import SpanModel
from jaxqa.squad.features import FeatureSettings, TrainFeatures, train_features
from jaxqa.squad.tokenizer import load_tokenizer
from jaxqa.training import batches, optim, pruning
from jaxqa.training.run_folder import MetricsLog, RunFolder, exclusive
from jaxqa.training.settings import (
    Settings,
    SettingsError,
    blame,
    changed_settings,
    parse,
    trajectory,
    validate,
    validate_mesh,
)
from jaxqa.training.state import TrainState
from jaxqa.training.state import shardings as state_shardings
from jaxqa.training.step import Distillation, make_train_step

log = logging.getLogger("jaxqa.train")


class TrainingError(Error):
    """A run that cannot go on; the message says which step or flag."""


def main(argv=None, prog: str = "python -m jaxqa.train") -> int:
    try:
        s = parse(argv, prog)
        with log_to(sys.stdout, logging.INFO if s.devices.process_id == 0 else logging.WARNING):  # the leader speaks
            return train(s)
    except Error as err:
        print(f"jaxqa.train: error: {err}", file=sys.stderr)
        return 2


def train(s: Settings) -> int:
    """One run, phase by phase: 0 when it ends; stopped by a signal (and saved),
    128 + the signal's number, as a shell reports a process the signal ended."""
    validate(s)
    mesh = start_processes(s)
    model = build_model(s)
    data = load_data(s, model.tokenizer)
    teacher = read_teacher(s, model)
    plan = plan_optimization(s, model.module, len(data.train.input_ids))
    layout = lay_out_state(s, model.module, plan, mesh)
    # What the run folder records, to resume only what it holds: the settings, and
    # digests of the data and the teacher, which may change under the same paths.
    run_settings = {**trajectory(s), "train_data": data.train_digest}
    if teacher:
        run_settings["teacher_weights"] = params_digest(teacher.source.config, teacher.params)
    with exclusive(s.run_folder):
        folder = RunFolder(
            s.run_folder, s.encoder.family, model.config, model.tokenizer_dir, keep=s.output.keep,
            shrink=compact.compact if plan.prune else None,
        )  # fmt: skip
        state = restore_or_init(s, folder, run_settings, model, plan, layout)
        folder.record_settings(run_settings)
        step_fn, teacher_params = compile_step(s, model.module, plan, layout, mesh, teacher)
        run = Run(s, model, data, plan, layout, mesh, folder)
        with signals_caught() as stop:
            state = run.loop(state, step_fn, teacher_params, stop)
        if stop.signal is not None:
            log.info(f"stopped by signal {stop.signal} at step {int(state.step)}; the same command resumes from "
                     f"{folder.directory}")  # fmt: skip
            return 128 + stop.signal
        run.finish(state)
    return 0


# ---------------------------------------------------------------- processes, model, data, teacher


def start_processes(s: Settings) -> Mesh:
    """Joins the other processes of a multi-host run, enables the compilation cache and makes the device mesh."""
    if s.devices.num_processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU runs; other platforms ignore it
        jax.distributed.initialize(
            s.devices.coordinator, num_processes=s.devices.num_processes, process_id=s.devices.process_id
        )
    compilation_cache.enable(s.devices.compilation_cache)
    mesh_sizes = sharding.parse_mesh(s.devices.mesh, jax.device_count())
    validate_mesh(s, mesh_sizes[sharding.DATA], jax.process_count())
    log.info(f"mesh data={mesh_sizes['data']} model={mesh_sizes['model']} over {jax.device_count()} "
             f"{jax.devices()[0].platform} device(s)")  # fmt: skip
    return sharding.make_mesh(mesh_sizes)


@dataclasses.dataclass(frozen=True)
class Model:
    """The model a run trains: its config as the run folder keeps it, the module
    that trains it (compute dtype, layout, attention dropout), its tokenizer and
    where the starting weights come from (None: random)."""

    config: models.ModelConfig
    module: SpanModel
    tokenizer: Tokenizer
    tokenizer_dir: Path
    source: Source | None


def build_model(s: Settings) -> Model:
    fam = models.family(s.encoder.family)
    source: Source | None
    if s.encoder.init == "random":
        if not s.encoder.tokenizer:
            raise SettingsError("--init random needs --tokenizer DIR (a folder with tokenizer.json or vocab.txt)")
        if s.encoder.size not in fam.sizes:
            raise SettingsError(f"--size {s.encoder.size!r}: {s.encoder.family} has {', '.join(fam.sizes)}")
        source, config, tokenizer_dir = None, fam.sizes[s.encoder.size], Path(s.encoder.tokenizer)
    else:
        try:
            source = open_checkpoint(s.encoder.init)
        except Error as err:
            raise SettingsError(
                f"--init {s.encoder.init}: {err}. Point --init at a local folder (a Hugging Face checkpoint or "
                "the output of convert/pt2flax.py), or use --init random --tokenizer DIR"
            ) from None
        if source.model_type != s.encoder.family:
            raise SettingsError(
                f"--init {s.encoder.init} holds a {source.model_type} model, not --model {s.encoder.family}"
            )
        config, tokenizer_dir = source.config, Path(s.encoder.tokenizer or source.folder)
    models.check_length(config, s.data.max_seq_length, "--max-seq-length")
    with blame("--tokenizer" if s.encoder.tokenizer else "--init"):
        tokenizer = load_tokenizer(tokenizer_dir, config.vocab_size)
    platform = jax.devices()[0].platform
    bf16 = s.encoder.precision == "bf16" or (
        s.encoder.precision == "auto" and precision.training_bf16(platform, precision.cpu_flags())
    )
    ex = execution.for_training(platform, bf16, s.encoder.scan_layers, s.encoder.remat_for(platform))
    # The run folder keeps the config as it came; training may drop out attention at another rate.
    trained = config
    if s.encoder.attention_dropout is not None:
        trained = dataclasses.replace(config, **{fam.attention_dropout: s.encoder.attention_dropout})  # type: ignore[type-var]
    module = SpanModel(trained, jnp.bfloat16 if bf16 else jnp.float32, jnp.float32, ex)
    log.info(f"{s.encoder.family}: layers {'scanned' if ex.scan else 'unrolled'}, remat {ex.remat}, "
             f"compute in {'bfloat16' if bf16 else 'float32'}")  # fmt: skip
    return Model(config, module, tokenizer, tokenizer_dir, source)


@dataclasses.dataclass(frozen=True)
class Data:
    train: TrainFeatures
    train_digest: str | None  # of the training file's contents (None for a hub dataset)
    eval: batches.EvalSet | None


def load_data(s: Settings, tokenizer: Tokenizer) -> Data:
    windows = FeatureSettings(s.data.max_seq_length, s.data.doc_stride, s.data.max_query_length)
    with blame("--train-file"):
        squad = batches.read(s.data.train_file, "train", s.data.max_train_examples)
        train_set = train_features(squad, tokenizer, windows)
    eval_set = None
    if s.data.eval_file:
        with blame("--eval-file"):
            eval_set = batches.eval_set(s.data.eval_file, s.data.max_eval_examples, tokenizer, windows)
        log.info(f"evaluating on {len(eval_set.data.examples)} questions from {s.data.eval_file}")
    return Data(train_set, squad.fingerprint, eval_set)


@dataclasses.dataclass(frozen=True)
class Teacher:
    source: Source
    params: dict  # on the host


def read_teacher(s: Settings, student: Model) -> Teacher | None:
    """The fine-tuned model to distil from (--teacher), checked against the student's tokenizer."""
    if not s.distillation.teacher:
        return None
    try:
        source = open_checkpoint(s.distillation.teacher)
        same_tokens = load_tokenizer(source.folder, source.config.vocab_size).to_str() == student.tokenizer.to_str()
        models.check_length(source.config, s.data.max_seq_length, "--max-seq-length")
        params = source.read_params(need_head="a teacher must be a question-answering model, fine-tuned")
    except Error as err:
        raise SettingsError(f"--teacher {s.distillation.teacher}: {err}") from None
    if not same_tokens:
        raise SettingsError(
            f"--teacher {source.folder} and the student ({student.tokenizer_dir}) tokenize differently; "
            "a teacher must share the student's tokenizer"
        )
    return Teacher(source, params)


# ---------------------------------------------------------------- optimizers and the state's layout


@dataclasses.dataclass(frozen=True)
class Plan:
    """How many steps, at which learning rates, updated by which optimizers, pruned how."""

    total_steps: int
    lr: optax.Schedule
    tx: optax.GradientTransformation
    prune: pruning.Pruning | None
    score_tx: optax.GradientTransformation | None


def plan_optimization(s: Settings, module: SpanModel, windows: int) -> Plan:
    steps_per_epoch = windows // s.optimization.batch_size
    if steps_per_epoch == 0:
        raise SettingsError(f"--batch-size {s.optimization.batch_size} is larger than the {windows} training features")
    total_steps = s.optimization.max_steps or math.ceil(s.optimization.epochs * steps_per_epoch)
    log.info(f"{windows} training features from {s.data.train_file}, {steps_per_epoch} steps per epoch, "
             f"{total_steps} steps")  # fmt: skip
    warmup = int(s.optimization.warmup_proportion * total_steps)
    lr = optim.schedule(s.optimization.learning_rate, warmup, total_steps)
    layer_axes = stacking.layer_axes(models.abstract_params(module))  # one trust ratio per layer
    tx = optim.build(
        s.optimization.optimizer,
        lr,
        s.optimization.weight_decay,
        clip_norm=s.optimization.clip_norm,
        layer_axes=layer_axes,
    )
    if not s.pruning.method:
        return Plan(total_steps, lr, tx, None, None)
    config = module.config
    block = pruning.block_edge(s.pruning.block, config.head_dim, config.hidden_size)
    if block != s.pruning.block and s.pruning.method == "hybrid":
        log.info(f"--prune-block {s.pruning.block}: blocks of {block} x {block}, which divide the model's heads")
    prune = pruning.Pruning(
        s.pruning.method, s.pruning.remaining, total_steps, warmup, s.pruning.initial_warmup, s.pruning.final_warmup,
        s.pruning.penalty, block,
    )  # fmt: skip
    # The pruning warm-ups are counted in learning-rate warm-ups: the cubic decay runs between them.
    decay = total_steps - (s.pruning.initial_warmup + s.pruning.final_warmup) * warmup
    if decay < 1:
        raise SettingsError(
            f"--prune-initial-warmup {s.pruning.initial_warmup} and --prune-final-warmup {s.pruning.final_warmup}: "
            f"{s.pruning.initial_warmup + s.pruning.final_warmup:g} warm-ups of {warmup} steps leave none of the run's "
            f"{total_steps} steps for the pruning schedule to decay over; lower them or train longer"
        )
    if warmup == 0 and (s.pruning.initial_warmup or s.pruning.final_warmup):
        log.warning(
            f"--prune-initial-warmup and --prune-final-warmup are counted in learning-rate warm-ups, which are 0 "
            f"steps here ({s.optimization.warmup_proportion} of {total_steps}): pruning decays over the whole run"
        )
    score_tx = optim.scores(
        optim.schedule(s.pruning.score_learning_rate, warmup, total_steps), s.optimization.clip_norm
    )
    return Plan(total_steps, lr, tx, prune, score_tx)


@dataclasses.dataclass(frozen=True)
class Layout:
    """The state's shape and where its leaves live on the mesh."""

    init: Callable[[dict], TrainState]  # parameters -> the state before the first step
    abstract: TrainState
    state_sh: TrainState
    param_sh: dict


def lay_out_state(s: Settings, module: SpanModel, plan: Plan, mesh: Mesh) -> Layout:
    boxed = models.abstract_params(module)
    param_sh = sharding.param_shardings(boxed, mesh, s.devices.fsdp)

    def init(params: dict) -> TrainState:
        scores = plan.prune.init_scores(params) if plan.prune else None
        return TrainState.create(params, plan.tx, scores, plan.score_tx)

    abstract = jax.eval_shape(init, nn.meta.unbox(boxed))
    state_sh = state_shardings(abstract, param_sh, sharding.replicated(mesh), plan.tx, plan.score_tx)
    return Layout(init, abstract, state_sh, param_sh)


def restore_or_init(
    s: Settings, folder: RunFolder, run_settings: dict, model: Model, plan: Plan, layout: Layout
) -> TrainState:
    """The state of the folder's last checkpoint (which replaces --init, not read),
    or a fresh one born sharded from --init's weights or random ones."""
    if folder.latest_step() is not None:
        changes = "; ".join(changed_settings(folder.settings, run_settings))
        if changes and not s.output.allow_changed_settings:
            raise SettingsError(
                f"{s.run_folder} holds a run trained with other settings ({changes}): the same command "
                "resumes it exactly; pass --allow-changed-settings to go on with the new values, "
                "or use another --run-dir"
            )
        if changes:
            log.warning(f"--allow-changed-settings: resuming with {changes}")
        restored = folder.restore(layout.abstract, layout.state_sh)
        log.info(f"resumed from {folder.directory} at step {int(restored.step)}")
        return restored
    if model.source is None:
        log.warning(
            f"--init random: training {s.encoder.family} {s.encoder.size} from random weights, not a pretrained encoder"
        )
        fresh = lambda key: layout.init(nn.meta.unbox(model.module.init(key, *models.example_batch())["params"]))
        return jax.jit(fresh, out_shardings=layout.state_sh)(jax.random.key(s.optimization.seed))
    start = jax.device_put(model.source.read_params(s.optimization.seed), layout.param_sh)
    return jax.jit(layout.init, out_shardings=layout.state_sh)(start)


def compile_step(
    s: Settings, module: SpanModel, plan: Plan, layout: Layout, mesh: Mesh, teacher: Teacher | None
) -> tuple[Callable, dict]:
    """The jitted train step `(state, batch, teacher_params) -> (state, metrics)`,
    and the teacher's parameters it takes: frozen, in the compute precision,
    sharded over the same mesh as the student ({} without one)."""
    distill, teacher_params, teacher_sh = None, {}, {}
    if teacher:
        teacher_module = SpanModel(teacher.source.config, module.dtype, jnp.float32, module.execution)
        teacher_sh = sharding.param_shardings(models.abstract_params(teacher_module), mesh, s.devices.fsdp)
        teacher_params = jax.device_put(teacher.params, teacher_sh)
        distill = Distillation(teacher_module, s.distillation.alpha, s.distillation.temperature)
        log.info(f"distilling from the {teacher.source.model_type} teacher {teacher.source.folder} "
                 f"(alpha {s.distillation.alpha}, temperature {s.distillation.temperature})")  # fmt: skip
    batch_sh = {key: sharding.batch_sharding(mesh, ndim, leading=1) for key, ndim in batches.TRAIN_NDIMS.items()}
    step_fn = jax.jit(
        make_train_step(module, plan.tx, s.optimization.seed, distill, plan.prune, plan.score_tx),
        in_shardings=(layout.state_sh, batch_sh, teacher_sh),
        out_shardings=(layout.state_sh, sharding.replicated(mesh)),
        donate_argnums=0,
    )
    return step_fn, teacher_params


# ---------------------------------------------------------------- the loop and the end of a run


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


@dataclasses.dataclass
class Throughput:
    """Sequences and real tokens (not padding) per second: over the window since
    the last log line, and steady (after the first step, which compiles)."""

    batch_size: int
    compile_seconds: float | None = None
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

    def steady(self, end: float) -> dict:
        if not self.steady_steps:
            return {"seq_per_s": None, "tokens_per_s": None}
        elapsed = end - self.steady_start
        return {
            "seq_per_s": round(self.steady_steps * self.batch_size / elapsed, 2),
            "tokens_per_s": round(self.steady_tokens / elapsed),
        }


class Run:
    """The steps of a run, its evaluations and checkpoints, and its end: the final
    model (compact when pruned), its evaluation and the summary."""

    def __init__(self, s: Settings, model: Model, data: Data, plan: Plan, layout: Layout, mesh: Mesh,
                 folder: RunFolder):  # fmt: skip
        self.s, self.model, self.data, self.plan, self.layout, self.mesh, self.folder = (
            s, model, data, plan, layout, mesh, folder,
        )  # fmt: skip
        self.leader = jax.process_index() == 0
        self.metrics_log = MetricsLog(s.run_folder, enabled=self.leader)
        self.masked = self._masked()
        self.started = time.perf_counter()
        self.ended = self.started
        self.throughput = Throughput(s.optimization.batch_size)

    def _masked(self) -> Callable:
        """The model a state stands for: (its parameters, pruned as the schedule
        says now; the share of weights kept)."""
        prune = self.plan.prune
        if prune is None:
            return lambda st: (st.params, 1.0)

        def pruned(st):
            return prune.apply(st.params, st.scores, prune.select(st.params, st.scores, st.step))

        return jax.jit(pruned, out_shardings=(self.layout.param_sh, sharding.replicated(self.mesh)))

    def evaluate(self, params) -> dict:
        if self.data.eval is None:
            return {}
        s = self.s
        return evaluate.evaluate_params(
            self.model.module, params, self.data.eval, self.mesh, s.evaluation.batch_size, s.evaluation.null_score_diff_threshold,
            s.data.length_step,
        )  # fmt: skip

    def loop(self, state: TrainState, step_fn: Callable, teacher_params: dict, stop: Stop) -> TrainState:
        """Steps until the end of the plan or a stop, then saves the state."""
        s, train_set, total = self.s, self.data.train, self.plan.total_steps
        step = int(state.step)
        if step:  # the steps after the checkpoint a stopped run left are logged again from here
            self.metrics_log.write({"resumed_from_step": step})
        progress = tqdm(total=total, initial=step, disable=not self.leader, unit="step", dynamic_ncols=True)
        while step < total and stop.signal is None:
            rows = batches.step_rows(
                train_set, step, s.optimization.batch_size, s.optimization.seed, s.data.length_step
            )
            local = batches.train_batch(
                train_set, rows, s.optimization.grad_accum, s.data.length_step, jax.process_index(), jax.process_count()
            )
            started = time.perf_counter()
            state, metrics = step_fn(state, sharding.global_batch(local, self.mesh, leading=1), teacher_params)
            step += 1
            self.throughput.stepped(int(batches.lengths(train_set)[rows].sum()), started, metrics)
            if step % s.output.log_every == 0 or step == total:
                self._log(state, step, metrics, progress)
                self.folder.check()
            progress.update(1)
            if s.evaluation.every and step % s.evaluation.every == 0 and step < total:
                params = self.masked(state)[0]
                result = self.evaluate(params)
                self.metrics_log.write({"step": step, **result})
                self.folder.keep_best(params, result, step)
            if step % s.output.save_every == 0:
                self.folder.save(step, state)
        progress.close()
        self.ended = time.perf_counter()
        self.folder.save(int(state.step), state, force=True)
        self.folder.wait()
        return state

    def _log(self, state: TrainState, step: int, metrics, progress) -> None:
        """Writes the step's metrics, after stopping the run at a non-finite loss or gradient."""
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
        self.metrics_log.write(record)
        progress.set_postfix(
            loss=f"{record['loss']:.3f}",
            lr=f"{record['learning_rate']:.2e}",
            seq_s=f"{record['seq_per_s'] or 0:.1f}",
            tok_s=f"{record['tokens_per_s'] or 0:.0f}",
        )

    def finish(self, state: TrainState) -> None:
        """Exports the final model (compact when pruned, with pruning.json), evaluates it, writes the summary."""
        s, run_dir = self.s, self.s.run_folder
        params, kept = self.masked(state)
        final_config = self.folder.export(params, run_dir / "model")
        if self.plan.prune:
            assert isinstance(self.model.config, bert.Config)  # pruning is BERT's (settings refuse others)
            report = {
                "method": s.pruning.method,
                "remaining_target": s.pruning.remaining,
                "remaining": round(float(kept), 4),
                **compact.report(self.model.config, final_config, s.data.max_seq_length),
            }
            if self.leader:
                write_file(run_dir / "pruning.json", json.dumps(report, indent=2) + "\n")
            log.info(f"pruned by {s.pruning.method}: {compact.describe(report)}; report in {run_dir / 'pruning.json'}")
        step = int(state.step)
        result = self.evaluate(params)
        if result:
            self.metrics_log.write({"step": step, **result})
            self.folder.keep_best(params, result, step)
        summary = {
            "steps": step,
            "wall_seconds": round(self.ended - self.started, 1),
            "compile_seconds": round(self.throughput.compile_seconds or 0, 1),
            **self.throughput.steady(self.ended),
            **{k: result[k] for k in ("exact", "f1") if k in result},
        }
        self.metrics_log.write({"summary": summary})
        log.info(f"done: {json.dumps(summary)}; model in {run_dir / 'model'}")


if __name__ == "__main__":
    sys.exit(main())
