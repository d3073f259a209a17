"""The optimization plan of a run: how many steps, at which learning rates,
updated by which optimizers, pruned how."""

import dataclasses
import logging
import math

import optax

from jaxqa import models
from jaxqa.models import stacking
from jaxqa.models.encoder import SpanModel
from jaxqa.training import optim, pruning
from jaxqa.training.settings import OptimizationSettings, PruningSettings, SettingsError

log = logging.getLogger("jaxqa.train")


@dataclasses.dataclass(frozen=True)
class Plan:
    """How many steps, at which learning rates, updated by which optimizers, pruned how."""

    total_steps: int
    lr: optax.Schedule
    tx: optax.GradientTransformation
    prune: pruning.Pruning | None
    score_tx: optax.GradientTransformation | None


def plan_optimization(
    o: OptimizationSettings, p: PruningSettings, module: SpanModel, windows: int, train_file: str
) -> Plan:
    """The plan of a run over `windows` training features (read from `train_file`),
    pruned as `p` says; the pruning schedule is counted in learning-rate warm-ups."""
    steps_per_epoch = windows // o.batch_size
    if steps_per_epoch == 0:
        raise SettingsError(f"--batch-size {o.batch_size} is larger than the {windows} training features")
    total_steps = o.max_steps or math.ceil(o.epochs * steps_per_epoch)
    log.info(f"{windows} training features from {train_file}, {steps_per_epoch} steps per epoch, "
             f"{total_steps} steps")  # fmt: skip
    warmup = int(o.warmup_proportion * total_steps)
    lr = optim.schedule(o.learning_rate, warmup, total_steps)
    layer_axes = stacking.layer_axes(models.abstract_params(module))  # one trust ratio per layer
    tx = optim.build(o.optimizer, lr, o.weight_decay, clip_norm=o.clip_norm, layer_axes=layer_axes)
    if not p.method:
        return Plan(total_steps, lr, tx, None, None)
    prune = _pruning(p, module, total_steps, warmup, o.warmup_proportion)
    score_tx = optim.scores(optim.schedule(p.score_learning_rate, warmup, total_steps), o.clip_norm)
    return Plan(total_steps, lr, tx, prune, score_tx)


def _pruning(
    p: PruningSettings, module: SpanModel, total_steps: int, warmup: int, warmup_proportion: float
) -> pruning.Pruning:
    """The pruning schedule over `total_steps`, its warm-ups counted in learning-rate
    warm-ups of `warmup` steps (`warmup_proportion` of the run)."""
    config = module.config
    block = pruning.block_edge(p.block, config.head_dim, config.hidden_size)
    if block != p.block and p.method == "hybrid":
        log.info(f"--prune-block {p.block}: blocks of {block} x {block}, which divide the model's heads")
    prune = pruning.Pruning(
        p.method, p.remaining, total_steps, warmup, p.initial_warmup, p.final_warmup, p.penalty, block
    )
    if warmup == 0:
        _check_zero_warmups(p, total_steps, warmup_proportion)
    # The pruning warm-ups are counted in learning-rate warm-ups: the cubic decay runs between them.
    decay = total_steps - (p.initial_warmup + p.final_warmup) * warmup
    if decay < 1:
        raise SettingsError(
            f"--prune-initial-warmup {p.initial_warmup} and --prune-final-warmup {p.final_warmup}: "
            f"{p.initial_warmup + p.final_warmup:g} warm-ups of {warmup} steps leave none of the run's "
            f"{total_steps} steps for the pruning schedule to decay over; lower them or train longer"
        )
    return prune


def _check_zero_warmups(p: PruningSettings, total_steps: int, warmup_proportion: float) -> None:
    """Where learning-rate warm-ups are 0 steps, pruning warm-ups do nothing:
    one asked for (not its default) is refused, the defaults are said to do nothing."""
    zero = f"learning-rate warm-ups, which are 0 steps here ({warmup_proportion:g} of {total_steps})"
    sides = (
        ("initial", p.initial_warmup, PruningSettings.initial_warmup),
        ("final", p.final_warmup, PruningSettings.final_warmup),
    )
    asked = [f"--prune-{side}-warmup {value:g}" for side, value, default in sides if value and value != default]
    if asked:
        raise SettingsError(
            f"{' and '.join(asked)}: counted in {zero}, so it would do nothing; "
            "raise --warmup-proportion or train longer"
        )
    if p.initial_warmup or p.final_warmup:
        log.warning(
            f"--prune-initial-warmup and --prune-final-warmup are counted in {zero}: pruning decays over the whole run"
        )
