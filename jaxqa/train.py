"""Fine-tunes BERT, SqueezeBERT, MobileBERT or DistilBERT on SQuAD 1.1 or 2.0,
distilling from a teacher and pruning (BERT) if asked.

    python -m jaxqa.train --model squeezebert [--config squeezebert:tiny] [--init DIR] [--train-file F] ...

Sharded with one `jax.jit` over a (data, model) device mesh; resumable from the
run folder after any interruption; evaluated with the official metric.
"""

import contextlib
import dataclasses
import functools
import json
import logging
import math
import signal
import sys
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from tqdm import tqdm

from jaxqa import compilation_cache, evaluate, models, precision, sharding
from jaxqa.checkpoint import open_checkpoint, params_digest
from jaxqa.errors import Error, log_to
from jaxqa.models import compact
from jaxqa.models.encoder import SpanModel, canonical_params, runtime_params
from jaxqa.models.stacking import Execution
from jaxqa.squad.features import FeatureSettings
from jaxqa.squad.tokenizer import load_tokenizer
from jaxqa.training import batches, optim, pruning
from jaxqa.training.run_folder import MetricsLog, RunFolder
from jaxqa.training.settings import (
    Settings,
    SettingsError,
    changed_settings,
    parse,
    remat_for,
    trajectory,
    validate,
    validate_mesh,
)
from jaxqa.training.step import Distillation, TrainState, make_train_step, relayout

log = logging.getLogger("jaxqa.train")


class TrainingError(Error):
    """A run that cannot go on; the message says which step or flag."""


@contextlib.contextmanager
def blame(flag: str):
    """Prefixes any jaxqa error raised in the block with the flag whose value caused it."""
    try:
        yield
    except Error as err:
        raise SettingsError(f"{flag}: {err}") from None


def main(argv=None) -> int:
    try:
        s = parse(argv)
        with log_to(sys.stdout, logging.INFO if s.process_id == 0 else logging.WARNING):  # the leader speaks
            return train(s)
    except Error as err:
        print(f"jaxqa.train: error: {err}", file=sys.stderr)
        return 2


def train(s: Settings) -> int:
    # ---------------------------------------------------------------- settings, processes, mesh
    validate(s)
    if s.num_processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU runs; other platforms ignore it
        jax.distributed.initialize(s.coordinator, num_processes=s.num_processes, process_id=s.process_id)
    compilation_cache.enable(s.compilation_cache)
    leader = jax.process_index() == 0
    mesh_sizes = sharding.parse_mesh(s.mesh, jax.device_count())
    validate_mesh(s, mesh_sizes[sharding.DATA], jax.process_count())
    mesh = sharding.make_mesh(mesh_sizes)
    run_dir = s.run_folder

    # ---------------------------------------------------------------- model and data
    fam = models.family(s.model)
    if s.init == "random":
        if not s.tokenizer:
            raise SettingsError("--init random needs --tokenizer DIR (a folder with tokenizer.json or vocab.txt)")
        if s.size not in fam.sizes:
            raise SettingsError(f"--size {s.size!r}: {s.model} has {', '.join(fam.sizes)}")
        source, config = None, fam.sizes[s.size]
        tokenizer_dir = Path(s.tokenizer)
    else:
        try:
            source = open_checkpoint(s.init)
        except Error as err:
            raise SettingsError(
                f"--init {s.init}: {err}. Point --init at a local folder (a Hugging Face checkpoint or "
                "the output of convert/pt2flax.py), or use --init random --tokenizer DIR"
            ) from None
        if source.model_type != s.model:
            raise SettingsError(f"--init {s.init} holds a {source.model_type} model, not --model {s.model}")
        config, tokenizer_dir = source.config, Path(s.tokenizer or source.folder)
    models.check_length(config, s.max_seq_length, "--max-seq-length")
    with blame("--tokenizer" if s.tokenizer else "--init"):
        tokenizer = load_tokenizer(tokenizer_dir)
    bf16 = s.precision == "bf16" or (
        s.precision == "auto" and precision.training_bf16(jax.devices()[0].platform, precision.cpu_flags())
    )
    dtype = jnp.bfloat16 if bf16 else jnp.float32
    execution = Execution(scan=s.scan_layers, remat=remat_for(s, jax.devices()[0].platform))
    # The run folder keeps the config as it came; training may drop out attention at another rate.
    trained_config = (
        config
        if s.attention_dropout is None
        else dataclasses.replace(config, **{fam.attention_dropout: s.attention_dropout})
    )
    model = SpanModel(trained_config, dtype=dtype, param_dtype=jnp.float32, execution=execution)
    run_settings = trajectory(s)  # what the run folder records, to resume only what it holds
    teacher = None
    if s.teacher:
        try:
            teacher = open_checkpoint(s.teacher)
            same_tokens = load_tokenizer(teacher.folder).to_str() == tokenizer.to_str()
            models.check_length(teacher.config, s.max_seq_length, "--max-seq-length")
            teacher_host_params = teacher.read_params()
        except Error as err:
            raise SettingsError(f"--teacher {s.teacher}: {err}") from None
        if not same_tokens:
            raise SettingsError(
                f"--teacher {teacher.folder} and the student ({tokenizer_dir}) tokenize differently; "
                "a teacher must share the student's tokenizer"
            )
        run_settings["teacher_weights"] = params_digest(teacher_host_params)  # a changed teacher under the same path
    windows = FeatureSettings(s.max_seq_length, s.doc_stride, s.max_query_length)
    with blame("--train-file"):
        train_set = batches.train_set(s.train_file, s.max_train_examples, tokenizer, windows)
    eval_set = None
    if s.eval_file:
        with blame("--eval-file"):
            eval_set = batches.eval_set(s.eval_file, s.max_eval_examples, tokenizer, windows)
        log.info(f"evaluating on {len(eval_set.data.examples)} questions from {s.eval_file}")
    steps_per_epoch = len(train_set.input_ids) // s.batch_size
    if steps_per_epoch == 0:
        raise SettingsError(
            f"--batch-size {s.batch_size} is larger than the {len(train_set.input_ids)} training features"
        )
    total_steps = s.max_steps or math.ceil(s.epochs * steps_per_epoch)
    log.info(
        f"{len(train_set.input_ids)} training features from {s.train_file}, {steps_per_epoch} steps per epoch, "
        f"{total_steps} steps; mesh data={mesh_sizes['data']} model={mesh_sizes['model']} over "
        f"{jax.device_count()} {jax.devices()[0].platform} device(s); layers {'scanned' if execution.scan else 'unrolled'}, "
        f"remat {execution.remat}"
    )

    # ---------------------------------------------------------------- optimizer and sharded state
    lr = optim.schedule(s.learning_rate, int(s.warmup_proportion * total_steps), total_steps)
    tx = optim.build(s.optimizer, lr, s.weight_decay, clip_norm=s.clip_norm)
    prune, score_tx = None, None
    if s.prune:
        block = pruning.block_edge(s.prune_block, config.head_dim, config.hidden_size)
        if block != s.prune_block and s.prune == "hybrid":
            log.info(f"--prune-block {s.prune_block}: blocks of {block} x {block}, which divide the model's heads")
        warmup = int(s.warmup_proportion * total_steps)
        prune = pruning.Pruning(
            s.prune,
            s.prune_remaining,
            total_steps,
            warmup,
            s.prune_initial_warmup,
            s.prune_final_warmup,
            s.prune_penalty,
            block,
        )
        score_tx = optim.scores(optim.schedule(s.prune_score_learning_rate, warmup, total_steps), s.clip_norm)
    # Training holds runs of like layers stacked (one compiled body, one optimizer
    # update per stacked weight); checkpoints hold one layer per name.
    boxed = models.abstract_params(model)
    param_sh = sharding.param_shardings(jax.eval_shape(functools.partial(runtime_params, model), boxed), mesh, s.fsdp)
    disk_param_sh = sharding.param_shardings(boxed, mesh, s.fsdp)
    stacked = functools.partial(relayout, layout=functools.partial(runtime_params, model))
    per_layer = functools.partial(relayout, layout=functools.partial(canonical_params, config))

    def init_state(params):  # from parameters one layer per name
        scores = prune.init_scores(params) if prune else None
        params = runtime_params(model, params)
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(params),
            bad_step=jnp.full((), -1, jnp.int32),
            scores=scores,
            score_opt_state=None if scores is None else score_tx.init(scores),
        )

    abstract_state = jax.eval_shape(init_state, nn.meta.unbox(boxed))
    abstract_disk = jax.eval_shape(per_layer, abstract_state)
    replicated = sharding.replicated(mesh)
    # Scores of one weight each are laid out as their kernels; block and unit scores are small: replicated.
    score_sh = (
        None
        if abstract_state.scores is None
        else {
            layer: {
                name: disk_param_sh[layer][name]["kernel"]
                if name in disk_param_sh[layer] and score.shape == abstract_disk.params[layer][name]["kernel"].shape
                else replicated
                for name, score in named.items()
            }
            for layer, named in abstract_state.scores.items()
        }
    )

    def state_shardings(abstract, params_sh) -> TrainState:
        return TrainState(
            step=replicated,
            params=params_sh,
            opt_state=optax.tree_utils.tree_map_params(
                tx, lambda _, sh: sh, abstract.opt_state, params_sh, transform_non_params=lambda _: replicated
            ),
            bad_step=replicated,
            scores=score_sh,
            score_opt_state=None
            if score_sh is None
            else optax.tree_utils.tree_map_params(
                score_tx,
                lambda _, sh: sh,
                abstract.score_opt_state,
                score_sh,
                transform_non_params=lambda _: replicated,
            ),
        )

    state_sh, disk_sh = state_shardings(abstract_state, param_sh), state_shardings(abstract_disk, disk_param_sh)
    to_disk = jax.jit(per_layer, out_shardings=disk_sh)
    folder = RunFolder(run_dir, s.model, config, tokenizer_dir, keep=s.keep, shrink=compact.compact if prune else None)
    if folder.latest_step() is not None:  # the checkpoint replaces --init, which is not read
        changes = "; ".join(changed_settings(folder.settings, run_settings))
        if changes and not s.allow_changed_settings:
            raise SettingsError(
                f"{run_dir} holds a run trained with other settings ({changes}): the same command "
                "resumes it exactly; pass --allow-changed-settings to go on with the new values, "
                "or use another --run-dir"
            )
        if changes:
            log.warning(f"WARNING: --allow-changed-settings: resuming with {changes}")
        state = jax.jit(stacked, out_shardings=state_sh)(folder.restore(abstract_disk, disk_sh))
        log.info(f"resumed from {folder.directory} at step {int(state.step)}")
    else:
        if source is None:
            log.warning(
                f"WARNING: --init random: training {s.model} {s.size} from random weights, not a pretrained encoder"
            )
            start_params = jax.device_get(nn.meta.unbox(models.init_params(model, jax.random.key(s.seed))))
        else:
            start_params = source.read_params(s.seed)
        state = jax.jit(init_state, out_shardings=state_sh)(jax.device_put(start_params, disk_param_sh))
        del start_params
    folder.record_settings(run_settings)

    # ---------------------------------------------------------------- teacher and train step
    distill, teacher_params, teacher_sh = None, {}, {}
    if teacher:  # frozen, in the compute precision, sharded over the same mesh as the student
        teacher_module = SpanModel(teacher.config, dtype=dtype, param_dtype=jnp.float32, execution=execution)
        teacher_sh = sharding.param_shardings(models.abstract_params(teacher_module), mesh, s.fsdp)
        # Stacked once, as the teacher's weights never change: no step copies them.
        teacher_params = jax.jit(functools.partial(runtime_params, teacher_module))(
            jax.device_put(teacher_host_params, teacher_sh)
        )
        teacher_sh = jax.tree_util.tree_map(lambda leaf: leaf.sharding, teacher_params)
        del teacher_host_params
        distill = Distillation(teacher_module, s.distill_alpha, s.distill_temperature)
        log.info(
            f"distilling from the {teacher.model_type} teacher {teacher.folder} (alpha {s.distill_alpha}, "
            f"temperature {s.distill_temperature})"
        )
    batch_sh = {key: sharding.batch_sharding(mesh, ndim, leading=1) for key, ndim in batches.TRAIN_NDIMS.items()}
    step_fn = jax.jit(
        make_train_step(model, tx, s.seed, distill, prune, score_tx),
        in_shardings=(state_sh, batch_sh, teacher_sh),
        out_shardings=(state_sh, replicated),
        donate_argnums=0,
    )

    # The model a state stands for: pruned, its weights masked as the schedule says now (and the share kept).
    def pruned(st):
        params = canonical_params(config, st.params)
        return prune.apply(params, st.scores, prune.select(params, st.scores, st.step))

    masked = jax.jit(pruned, out_shardings=(disk_param_sh, replicated)) if prune else lambda st: (st.params, 1.0)

    def run_eval(params):
        return (
            evaluate.evaluate_params(
                model, params, eval_set, mesh, s.eval_batch_size, s.null_score_diff_threshold, s.length_step
            )
            if eval_set
            else {}
        )

    # ---------------------------------------------------------------- loop
    stop = {"signal": None}
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda num, _: stop.update(signal=num))
    metrics_log = MetricsLog(run_dir, enabled=leader)
    step = int(state.step)
    progress = tqdm(total=total_steps, initial=step, disable=not leader, unit="step", dynamic_ncols=True)
    started, window_start, compile_seconds = time.perf_counter(), time.perf_counter(), None
    window_steps = window_tokens = steady_tokens = (
        0  # steps and real tokens since window_start; tokens since steady_start
    )
    steady_start, steady_from = started, step
    while step < total_steps and stop["signal"] is None:
        rows = batches.step_rows(train_set, step, s.batch_size, s.seed, s.length_step)
        local = batches.train_batch(
            train_set, rows, s.grad_accum, s.length_step, jax.process_index(), jax.process_count()
        )
        batch = sharding.global_batch(local, mesh, leading=1)
        tick = time.perf_counter()
        state, metrics = step_fn(state, batch, teacher_params)  # compiled once per padded length
        step += 1
        window_steps += 1
        tokens = int(batches.lengths(train_set)[rows].sum())
        window_tokens += tokens
        steady_tokens += tokens
        if compile_seconds is None:
            jax.block_until_ready(metrics)
            compile_seconds = time.perf_counter() - tick
            log.info(f"train step compiled and ran once in {compile_seconds:.1f}s")
            window_start, window_steps, window_tokens, steady_tokens = time.perf_counter(), 0, 0, 0
            steady_start, steady_from = window_start, step
        if step % s.log_every == 0 or step == total_steps:
            metrics, bad_step = jax.device_get((metrics, state.bad_step))
            if bad_step >= 0:
                folder.save(int(state.step), to_disk(state), force=True)
                folder.wait()
                raise TrainingError(
                    f"non-finite loss or gradient at step {int(bad_step)}; the checkpoint of step "
                    f"{int(state.step)} in {folder.directory} holds the state before it"
                )
            elapsed = max(time.perf_counter() - window_start, 1e-9)
            record = {
                "step": step,
                **{key: float(value) for key, value in metrics.items()},
                "learning_rate": float(lr(step - 1)),
                "seq_per_s": window_steps * s.batch_size / elapsed if window_steps else None,
                "tokens_per_s": window_tokens / elapsed if window_steps else None,
            }  # real tokens, not padding
            metrics_log.write(record)
            progress.set_postfix(
                loss=f"{record['loss']:.3f}",
                lr=f"{record['learning_rate']:.2e}",
                seq_s=f"{record['seq_per_s'] or 0:.1f}",
                tok_s=f"{record['tokens_per_s'] or 0:.0f}",
            )
            window_start, window_steps, window_tokens = time.perf_counter(), 0, 0
        progress.update(1)
        if s.eval_every and step % s.eval_every == 0 and step < total_steps:
            params = masked(state)[0]
            result = run_eval(params)
            metrics_log.write({"step": step, **result})
            folder.keep_best(params, result, step)
        if step % s.save_every == 0:
            folder.save(step, to_disk(state))
    progress.close()
    train_end = time.perf_counter()
    folder.save(int(state.step), to_disk(state), force=True)
    folder.wait()
    if stop["signal"] is not None:
        log.info(f"stopped by signal {stop['signal']} at step {step}; the same command resumes from {folder.directory}")
        return 0

    # ---------------------------------------------------------------- final model and summary
    wall = train_end - started
    params, kept = masked(state)
    final_config = folder.export(params, run_dir / "model")
    if prune:
        report = {
            "method": s.prune,
            "remaining_target": s.prune_remaining,
            "remaining": round(float(kept), 4),
            **compact.report(config, final_config, s.max_seq_length),
        }
        if leader:
            (run_dir / "pruning.json").write_text(json.dumps(report, indent=2) + "\n")
        log.info(f"pruned by {s.prune}: {compact.describe(report)}; report in {run_dir / 'pruning.json'}")
    result = run_eval(params)
    if result:
        metrics_log.write({"step": step, **result})
        folder.keep_best(params, result, step)
    steady = (step - steady_from) * s.batch_size / (train_end - steady_start) if step > steady_from else None
    steady_tokens = steady_tokens / (train_end - steady_start) if step > steady_from else None
    summary = {
        "steps": step,
        "wall_seconds": round(wall, 1),
        "compile_seconds": round(compile_seconds or 0, 1),
        "seq_per_s": steady and round(steady, 2),
        "tokens_per_s": steady_tokens and round(steady_tokens),
        **{k: result[k] for k in ("exact", "f1") if k in result},
    }
    metrics_log.write({"summary": summary})
    log.info(f"done: {json.dumps(summary)}; model in {run_dir / 'model'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
