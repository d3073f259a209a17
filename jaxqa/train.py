"""Fine-tunes BERT, SqueezeBERT or MobileBERT on SQuAD 1.1 or 2.0.

    python -m jaxqa.train --model squeezebert [--init DIR] [--train-file F] ...

Sharded with one `jax.jit` over a (data, model) device mesh; resumable from the
run folder after any interruption; evaluated with the official metric.
"""

import json
import math
import signal
import sys
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct
from tqdm import tqdm

from jaxqa import checkpoint, compilation_cache, data, evaluate, models, optim, pretrained, sharding
from jaxqa.settings import Settings, parse


@struct.dataclass
class TrainState:
    step: jax.Array  # () int32: optimizer steps taken
    params: dict
    opt_state: optax.OptState
    bad_step: jax.Array  # () int32: first step whose loss or gradient was not finite; -1 if none


class TrainingError(RuntimeError):
    """A run that cannot start or go on; the message says which flag or step."""


def span_loss(start_logits, end_logits, start_positions, end_positions):
    """Mean cross-entropy of the start and end positions, as the reference QA heads."""
    start = optax.softmax_cross_entropy_with_integer_labels(start_logits, start_positions)
    end = optax.softmax_cross_entropy_with_integer_labels(end_logits, end_positions)
    return (start.mean() + end.mean()) / 2


def make_train_step(model: nn.Module, tx: optax.GradientTransformation, seed: int):
    def loss_fn(params, batch, rng):
        start, end = model.apply(
            {"params": params}, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
            deterministic=False, rngs={"dropout": rng},
        )
        return span_loss(start, end, batch["start_positions"], batch["end_positions"])

    def train_step(state: TrainState, batch: dict):
        # batch: (A, B/A, ...) micro-batches; gradients are summed over them.
        rng = jax.random.fold_in(jax.random.key(seed), state.step)

        def micro(grads, inputs):
            index, micro_batch = inputs
            loss, g = jax.value_and_grad(loss_fn)(state.params, micro_batch, jax.random.fold_in(rng, index))
            return jax.tree_util.tree_map(jnp.add, grads, g), loss

        accum = batch["input_ids"].shape[0]
        zeros = jax.tree_util.tree_map(jnp.zeros_like, state.params)
        grads, losses = jax.lax.scan(micro, zeros, (jnp.arange(accum), batch))
        grads = jax.tree_util.tree_map(lambda g: g / accum, grads)
        loss, grad_norm = losses.mean(), optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        # A non-finite loss freezes the state at the last good step and records where it happened.
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        ok = finite & (state.bad_step < 0)
        keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, old)
        new_state = TrainState(
            step=state.step + ok.astype(jnp.int32),
            params=keep(params, state.params),
            opt_state=keep(opt_state, state.opt_state),
            bad_step=jnp.where((state.bad_step < 0) & ~finite, state.step, state.bad_step),
        )
        return new_state, {"loss": loss, "grad_norm": grad_norm}

    return train_step


def initial_model(s: Settings, say) -> tuple[dict, object, Path]:
    """(float32 parameters, model config, tokenizer folder) that training starts from."""
    fam = models.family(s.model)
    if s.init == "random":
        if not s.tokenizer:
            raise TrainingError("--init random needs --tokenizer DIR (a folder with tokenizer.json or vocab.txt)")
        config = fam.SIZES[s.size] if s.size in fam.SIZES else None
        if config is None:
            raise TrainingError(f"--size {s.size!r}: {s.model} has {', '.join(fam.SIZES)}")
        say(f"WARNING: --init random: training {s.model} {s.size} from random weights, not a pretrained encoder")
        params = nn.meta.unbox(models.init_params(fam.Model(config), jax.random.key(s.seed)))
        return jax.device_get(params), config, Path(s.tokenizer)
    try:
        model = pretrained.load_pretrained(s.init)
    except pretrained.ConversionError as err:
        raise TrainingError(f"--init {s.init}: {err}. Point --init at a local folder (a Hugging Face checkpoint or "
                            "the output of convert/pt2flax.py), or use --init random --tokenizer DIR") from None
    if model.model_type != s.model:
        raise TrainingError(f"--init {s.init} holds a {model.model_type} model, not --model {s.model}")
    return jax.device_get(model.params), model.config, Path(s.tokenizer or model.folder)


def main(argv=None) -> int:
    try:
        settings = parse(argv)
        return train(settings)
    except (TrainingError, sharding.MeshError, pretrained.ConversionError, data.DataError, checkpoint.CheckpointError,
            FileNotFoundError) as err:
        print(f"jaxqa.train: error: {err}", file=sys.stderr)
        return 2


def train(s: Settings) -> int:
    # ---------------------------------------------------------------- processes and mesh
    if s.num_processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU runs; other platforms ignore it
        jax.distributed.initialize(s.coordinator, num_processes=s.num_processes, process_id=s.process_id)
    compilation_cache.enable(s.compilation_cache)
    leader = jax.process_index() == 0
    say = print if leader else (lambda *a, **k: None)
    mesh_sizes = sharding.parse_mesh(s.mesh, jax.device_count())
    micro = s.batch_size // max(s.grad_accum, 1)
    if s.grad_accum < 1 or s.batch_size % s.grad_accum:
        raise TrainingError(f"--batch-size {s.batch_size} is not a multiple of --grad-accum {s.grad_accum}")
    if micro % mesh_sizes[sharding.DATA]:
        raise TrainingError(f"--batch-size {s.batch_size} / --grad-accum {s.grad_accum} = {micro} sequences per "
                            f"micro-batch, not divisible by the data axis ({mesh_sizes[sharding.DATA]} devices)")
    if micro % jax.process_count():
        raise TrainingError(f"--batch-size {s.batch_size}: a micro-batch of {micro} does not split over {jax.process_count()} processes")
    if s.eval_batch_size % mesh_sizes[sharding.DATA]:
        raise TrainingError(f"--eval-batch-size {s.eval_batch_size} is not divisible by the data axis ({mesh_sizes[sharding.DATA]})")
    if s.precision not in ("bf16", "fp32", "auto"):
        raise TrainingError(f"--precision {s.precision!r}: choose bf16, fp32 or auto")
    if s.optimizer not in optim.OPTIMIZERS:
        raise TrainingError(f"--optimizer {s.optimizer!r}: choose {' or '.join(optim.OPTIMIZERS)}")
    if not 0 <= s.warmup_proportion < 1 or s.epochs <= 0 or s.max_steps < 0:
        raise TrainingError("--warmup-proportion must be in [0, 1), --epochs positive and --max-steps not negative")
    mesh = sharding.make_mesh(mesh_sizes)
    run_dir = Path(s.run_dir.format(model=s.model))

    # ---------------------------------------------------------------- model and data
    start_params, config, tokenizer_dir = initial_model(s, say)
    fam = models.family(s.model)
    # CPUs have no fast bfloat16 matrix units; accelerators do.
    bf16 = s.precision == "bf16" or (s.precision == "auto" and jax.devices()[0].platform != "cpu")
    dtype = jnp.bfloat16 if bf16 else jnp.float32
    model = fam.Model(config, dtype=dtype, param_dtype=jnp.float32)
    train_set = data.train_features(s, tokenizer_dir, say)
    eval_set = data.eval_set(s, tokenizer_dir, say) if s.eval_file else None
    steps_per_epoch = len(train_set.input_ids) // s.batch_size
    if steps_per_epoch == 0:
        raise TrainingError(f"--batch-size {s.batch_size} is larger than the {len(train_set.input_ids)} training features")
    total_steps = s.max_steps or math.ceil(s.epochs * steps_per_epoch)
    say(f"{len(train_set.input_ids)} training features, {steps_per_epoch} steps per epoch, {total_steps} steps; "
        f"mesh data={mesh_sizes['data']} model={mesh_sizes['model']} over {jax.device_count()} {jax.devices()[0].platform} device(s)")

    # ---------------------------------------------------------------- optimizer and sharded state
    lr = optim.schedule(s.learning_rate, int(s.warmup_proportion * total_steps), total_steps)
    tx = optim.build(s.optimizer, lr, s.weight_decay, clip_norm=s.clip_norm)
    boxed = models.abstract_params(model)
    param_sh = sharding.param_shardings(boxed, mesh, s.fsdp)

    def init_state(params):
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                          bad_step=jnp.full((), -1, jnp.int32))

    abstract_state = jax.eval_shape(init_state, nn.meta.unbox(boxed))
    replicated = sharding.replicated(mesh)
    state_sh = TrainState(
        step=replicated,
        params=param_sh,
        opt_state=optax.tree_utils.tree_map_params(
            tx, lambda _, sh: sh, abstract_state.opt_state, param_sh, transform_non_params=lambda _: replicated),
        bad_step=replicated,
    )
    checkpoints = checkpoint.Checkpoints(run_dir, s.model, config, tokenizer_dir, keep=s.keep)
    if checkpoints.latest_step() is not None:
        state = checkpoints.restore(abstract_state, state_sh)
        say(f"resumed from {checkpoints.directory} at step {int(state.step)}")
    else:
        params = jax.device_put(start_params, param_sh)
        state = jax.jit(init_state, out_shardings=state_sh)(params)
    del start_params

    # ---------------------------------------------------------------- train step
    batch_sh = {key: sharding.batch_sharding(mesh, ndim, leading=1) for key, ndim in data.TRAIN_NDIMS.items()}
    step_fn = jax.jit(make_train_step(model, tx, s.seed), in_shardings=(state_sh, batch_sh),
                      out_shardings=(state_sh, replicated), donate_argnums=0)

    def run_eval(state):
        return evaluate.evaluate_model(model, state.params, eval_set, mesh, s.eval_batch_size,
                                       s.null_score_diff_threshold, say) if eval_set else {}

    # ---------------------------------------------------------------- loop
    stop = {"signal": None}
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda num, _: stop.update(signal=num))
    log = checkpoint.MetricsLog(run_dir, enabled=leader)
    step = int(state.step)
    progress = tqdm(total=total_steps, initial=step, disable=not leader, unit="step", dynamic_ncols=True)
    started, window_start, window_steps, compile_seconds = time.perf_counter(), time.perf_counter(), 0, None
    steady_start, steady_from = started, step
    while step < total_steps and stop["signal"] is None:
        batch = sharding.global_batch(data.train_batch(train_set, step, s, jax.process_index(), jax.process_count()),
                                      mesh, leading=1)
        tick = time.perf_counter()
        state, metrics = step_fn(state, batch)
        step += 1
        window_steps += 1
        if compile_seconds is None:
            jax.block_until_ready(metrics)
            compile_seconds = time.perf_counter() - tick
            say(f"train step compiled and ran once in {compile_seconds:.1f}s")
            window_start, window_steps = time.perf_counter(), 0
            steady_start, steady_from = window_start, step
        if step % s.log_every == 0 or step == total_steps:
            metrics, bad_step = jax.device_get((metrics, state.bad_step))
            if bad_step >= 0:
                checkpoints.save(int(state.step), state, force=True)
                checkpoints.wait()
                raise TrainingError(f"non-finite loss or gradient at step {int(bad_step)}; the checkpoint of step "
                                    f"{int(state.step)} in {checkpoints.directory} holds the state before it")
            elapsed = max(time.perf_counter() - window_start, 1e-9)
            record = {"step": step, "loss": float(metrics["loss"]), "grad_norm": float(metrics["grad_norm"]),
                      "learning_rate": float(lr(step - 1)),
                      "seq_per_s": window_steps * s.batch_size / elapsed if window_steps else None}
            log.write(record)
            progress.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['learning_rate']:.2e}",
                                 seq_s=f"{record['seq_per_s'] or 0:.1f}")
            window_start, window_steps = time.perf_counter(), 0
        progress.update(1)
        if s.eval_every and step % s.eval_every == 0 and step < total_steps:
            result = run_eval(state)
            log.write({"step": step, **result})
            checkpoints.keep_best(state.params, result, step)
        if step % s.save_every == 0:
            checkpoints.save(step, state)
    progress.close()
    train_end = time.perf_counter()
    checkpoints.save(int(state.step), state, force=True)
    checkpoints.wait()
    if stop["signal"] is not None:
        say(f"stopped by signal {stop['signal']} at step {step}; the same command resumes from {checkpoints.directory}")
        return 0

    # ---------------------------------------------------------------- final model and summary
    wall = train_end - started
    final = checkpoints.export(state.params, run_dir / "model")
    result = run_eval(state)
    if result:
        log.write({"step": step, **result})
        checkpoints.keep_best(state.params, result, step)
    steady = (step - steady_from) * s.batch_size / (train_end - steady_start) if step > steady_from else None
    summary = {"steps": step, "wall_seconds": round(wall, 1), "compile_seconds": round(compile_seconds or 0, 1),
               "seq_per_s": steady and round(steady, 2), **{k: result[k] for k in ("exact", "f1") if k in result}}
    log.write({"summary": summary})
    say(f"done: {json.dumps(summary)}; model in {final}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
