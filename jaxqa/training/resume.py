"""The state a run begins with: the run folder's last checkpoint, resumed only
with the settings it was trained with (it replaces --init, not read), or a
fresh state born sharded from --init's weights or random ones."""

import logging

import flax.linen as nn
import jax

from jaxqa import models
from jaxqa.training.model import Model
from jaxqa.training.run_folder import RunFolder
from jaxqa.training.settings import SettingsError, changed_settings
from jaxqa.training.state import Layout, TrainState

log = logging.getLogger("jaxqa.train")


def resume(folder: RunFolder, recorded: dict, allow_changed: bool, layout: Layout) -> TrainState | None:
    """The state of the folder's last checkpoint, None if it has none. A run
    recorded with other settings than `recorded` is refused, naming each
    change, unless `allow_changed` (--allow-changed-settings)."""
    if folder.latest_step() is None:
        return None
    changes = "; ".join(changed_settings(folder.settings, recorded))
    if changes and not allow_changed:
        raise SettingsError(
            f"{folder.run_dir} holds a run trained with other settings ({changes}): the same command "
            "resumes it exactly; pass --allow-changed-settings to go on with the new values, "
            "or use another --run-dir"
        )
    if changes:
        log.warning(f"--allow-changed-settings: resuming with {changes}")
    restored = folder.restore(layout.abstract, layout.state_sh)
    log.info(f"resumed from {folder.directory} at step {int(restored.step)}")
    return restored


def fresh(model: Model, layout: Layout, seed: int) -> TrainState:
    """The state before the first step, of --init's weights (a fresh span head
    where it has none) or random ones, from `seed`."""
    if model.source is None:
        log.warning(
            f"--init random: training {model.family} {model.size} from random weights, not a pretrained encoder"
        )
        born = lambda key: layout.init(nn.meta.unbox(model.module.init(key, *models.example_batch())["params"]))
        return jax.jit(born, out_shardings=layout.state_sh)(jax.random.key(seed))
    start = jax.device_put(model.source.read_params(seed), layout.param_sh)
    return jax.jit(layout.init, out_shardings=layout.state_sh)(start)
