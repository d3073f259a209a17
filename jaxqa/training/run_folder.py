"""The run folder of a training job: orbax checkpoints to resume from, the best
and final models as jaxqa checkpoints, and the metrics log.

    RUN/run.json          the model and config the checkpoints belong to, and the
                          settings they were trained with
    RUN/checkpoints/N/    orbax: weights, optimizer state, step (last `keep`);
                          N.damaged/: one that could not be read, set aside
    RUN/best/, RUN/model/ jaxqa checkpoint folders (best dev F1, final)
    RUN/metrics.jsonl     one JSON object per log line
    RUN/lock              the host and pid of the run training in it now

orbax writes each checkpoint to a temporary folder and renames it when it is
complete, so a run killed while saving never resumes from a partial one.
"""

import contextlib
import json
import logging
import os
import shutil
import socket
import sys
import warnings
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from jaxqa import checkpoint
from jaxqa.errors import Error, write_file

log = logging.getLogger("jaxqa.run_folder")


class RunFolderError(Error):
    """A run folder whose checkpoints do not belong to this run, or cannot be read; the message names the folder."""


@contextlib.contextmanager
def exclusive(run_dir: Path):
    """Within the block, this process alone trains in `run_dir` (RUN/lock names
    it); a second one is refused, naming the first. A lock whose process is
    gone from this host (a killed run) is taken over. With several processes,
    process 0 holds it for all."""
    if jax.process_index() != 0:
        yield
        return
    lock = Path(run_dir) / "lock"
    try:
        _take(lock)
    except OSError as err:  # a read-only or full disk, say
        raise RunFolderError(f"--run-dir {run_dir}: cannot write {lock} ({err.strerror})") from None
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _take(lock: Path) -> None:
    """Makes `lock`, naming this process, unless a running one holds it (refused, naming it)."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    mine = {"host": socket.gethostname(), "pid": os.getpid()}
    while True:
        try:
            with open(lock, "x") as f:
                json.dump(mine, f)
            return
        except FileExistsError:
            holder = _holder(lock)
            if holder is not None:
                raise RunFolderError(
                    f"{lock.parent} is in use by another training (pid {holder['pid']} on {holder['host']}, see "
                    f"{lock}); wait for it, or use another --run-dir"
                ) from None
            lock.unlink(missing_ok=True)  # stale: its process is gone


@contextlib.contextmanager
def tidied(run_dir: Path):
    """Within the block, a run that fails leaves no empty folder of its making:
    an empty RUN/checkpoints/, and RUN itself where the run made it and left it
    empty, are removed (a folder that holds anything stays as it is)."""
    made = not Path(run_dir).exists()
    try:
        yield
    except BaseException:
        if jax.process_index() == 0:
            for folder in (Path(run_dir) / "checkpoints", *([Path(run_dir)] if made else [])):
                with contextlib.suppress(OSError):  # missing, or not empty
                    folder.rmdir()
        raise


def _holder(lock: Path) -> dict | None:
    """Who holds `lock`, if its process still runs (or runs on another host, where it cannot be told)."""
    try:
        holder = json.loads(lock.read_text())
        pid, host = int(holder["pid"]), str(holder["host"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # half written or gone: no one to wait for
    if host != socket.gethostname():
        return {"pid": pid, "host": host}
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, another user's
        pass
    return {"pid": pid, "host": host}


class RunFolder:
    """The checkpoints and exports of one run (see the module's docstring)."""

    def __init__(self, run_dir: Path, model_type: str, config, tokenizer_dir: Path, keep: int, shrink=None):
        """`shrink(config, params) -> (config, params)`, if given, makes each exported model compact."""
        self.run_dir, self.model_type, self.config, self.tokenizer_dir = (
            Path(run_dir),
            model_type,
            config,
            tokenizer_dir,
        )
        self.shrink = shrink
        self.directory = self.run_dir / "checkpoints"
        self.identity = {"model_type": model_type, "config": config.to_hf()}
        self.marker = self.run_dir / "run.json"
        stored = {}
        if self.marker.is_file():
            try:
                stored = json.loads(self.marker.read_text())
            except ValueError:
                stored = None  # type: ignore[assignment]  # refused just below
            if not isinstance(stored, dict):
                raise RunFolderError(f"{self.marker}: not a JSON object; use another --run-dir")
            if {key: stored.get(key) for key in self.identity} != self.identity:
                raise RunFolderError(
                    f"{self.run_dir} holds checkpoints of another model ({stored.get('model_type')}, "
                    f"{stored.get('config', {}).get('hidden_size')} hidden, "
                    f"{stored.get('config', {}).get('num_hidden_layers')} layers): use another --run-dir"
                )
        # The settings the checkpoints were trained with; {} from a run folder of an older jaxqa, which kept none.
        self.settings = stored.get("settings", {})
        if jax.process_index() == 0:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        with _quiet("absl"):  # orbax logs each checkpoint it cannot parse; `restore` says it in one line
            self.manager = ocp.CheckpointManager(
                self.directory.absolute(), options=ocp.CheckpointManagerOptions(max_to_keep=keep)
            )
        best = self.run_dir / "best" / "metrics.json"
        self.best_f1 = json.loads(best.read_text())["f1"] if best.is_file() else -1.0

    def record_settings(self, settings: dict) -> None:
        """Writes run.json: the model and the `settings` that the checkpoints from now on are trained with."""
        self.settings = settings
        if jax.process_index() == 0:  # whole, so that no process ever reads half of it
            write_file(self.marker, json.dumps({**self.identity, "settings": settings}, indent=2))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, force: bool = False) -> None:
        """Saves in the background; a save that failed (a full disk, say) stops
        the run in one line here, at `check` or at `wait`."""
        with self._saving():
            if step not in self.manager.all_steps():
                self.manager.save(step, args=ocp.args.StandardSave(state), force=force)

    def check(self) -> None:
        """Raises at once if a save in the background failed, so that the run does not train on unsaved."""
        with self._saving():
            self.manager.check_for_errors()

    def wait(self) -> None:
        with self._saving():
            self.manager.wait_until_finished()

    @contextlib.contextmanager
    def _saving(self):
        try:
            with _quiet("absl"):  # orbax logs a failed save at length; the error below says it in one line
                yield
        except Exception as err:  # orbax raises several types, OSError for a full disk among them
            reason = (str(err).strip().splitlines() or [type(err).__name__])[-1][:200]
            raise RunFolderError(
                f"{self.directory}: a checkpoint could not be saved ({reason}); the run stops"
            ) from None

    def restore(self, abstract_state, shardings):
        """The latest readable checkpoint, laid out on the mesh as `shardings` says.

        Checkpoints after it that cannot be read (damaged on disk) are moved aside
        to `N.damaged`, with a warning; when none can be read, nothing is moved
        (a model of other shapes reads none) and the error names the folder.
        """
        target = jax.tree_util.tree_map(
            lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
            abstract_state,
            shardings,
        )
        _drop_reports_of_abandoned_reads()
        unreadable = {}  # step -> why
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                with _quiet("absl"):
                    state = self.manager.restore(step, args=ocp.args.StandardRestore(target))
            except Exception as err:  # orbax raises several types for a mismatched or damaged tree
                unreadable[step] = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]}"
                continue
            if unreadable:
                self._set_aside(unreadable)
                log.warning(
                    f"{self.directory}: cannot read the checkpoint of step "
                    f"{', '.join(map(str, unreadable))} ({'; '.join(unreadable.values())}); set aside as "
                    f"{', '.join(f'{bad}.damaged' for bad in unreadable)}, resuming from step {step}"
                )
            return state
        latest = max(unreadable)
        raise RunFolderError(
            f"{self.directory}: cannot restore any checkpoint into this model (step {latest}: "
            f"{unreadable[latest]}): damaged, or of other settings; use another --run-dir"
        )

    def _set_aside(self, steps) -> None:
        if jax.process_index() == 0:
            for step in steps:
                aside = self.directory / f"{step}.damaged"
                if aside.exists():
                    shutil.rmtree(aside)
                (self.directory / str(step)).rename(aside)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("jaxqa: damaged checkpoints set aside")
        with _quiet("absl"):
            self.manager.reload()

    def export(self, params, folder: Path):
        """Writes `params` as a jaxqa checkpoint folder (from process 0), compact if
        the run shrinks its models; returns the config written."""
        host = (
            multihost_utils.process_allgather(params, tiled=True) if jax.process_count() > 1 else jax.device_get(params)
        )
        host = jax.tree_util.tree_map(np.asarray, host)
        config, host = self.shrink(self.config, host) if self.shrink else (self.config, host)
        if jax.process_index() == 0:
            checkpoint.save_pretrained(folder, self.model_type, config, host, self.tokenizer_dir, overwrite=True)
        return config

    def keep_best(self, params, result: dict, step: int) -> None:
        """Exports `params` to RUN/best when `result` has the best dev F1 so far."""
        if "f1" not in result or result["f1"] <= self.best_f1:
            return
        self.best_f1 = result["f1"]
        self.export(params, self.run_dir / "best")
        if jax.process_index() == 0:
            write_file(self.run_dir / "best" / "metrics.json", json.dumps({"step": step, **result}, indent=2))


@contextlib.contextmanager
def _quiet(logger: str):
    """Within the block, the `logger` says nothing below CRITICAL."""
    saved = logging.getLogger(logger).level
    logging.getLogger(logger).setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logging.getLogger(logger).setLevel(saved)


def _drop_reports_of_abandoned_reads() -> None:
    """When orbax gives up on a damaged checkpoint, it leaves reads in flight:
    they finish later and call back into the event loop that orbax has closed
    by then (Python reports each call as an unraisable RuntimeError, with a
    traceback of its own, hundreds of them), asyncio logs the failures that
    nobody collected, and Python warns of the coroutines never awaited. From
    now on in this process, those reports, and only those, are dropped:
    `restore` says what went wrong in one line."""
    global _report_unraisable
    if sys.unraisablehook is not _report_unless_closed_loop:
        _report_unraisable, sys.unraisablehook = sys.unraisablehook, _report_unless_closed_loop
        logging.getLogger("asyncio").addFilter(_not_an_uncollected_failure)
        warnings.filterwarnings("ignore", r"coroutine '.*' was never awaited", RuntimeWarning)


def _report_unless_closed_loop(unraisable) -> None:
    if not (isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed"):
        _report_unraisable(unraisable)


def _not_an_uncollected_failure(record: logging.LogRecord) -> bool:
    return not record.getMessage().partition("\n")[0].endswith("exception was never retrieved")


_report_unraisable = sys.unraisablehook


class MetricsLog:
    """Appends records to RUN/metrics.jsonl, and to TensorBoard when tensorboardX is installed."""

    def __init__(self, run_dir: Path, enabled: bool):
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self.tensorboard = None
        if enabled:
            try:
                from tensorboardX import SummaryWriter

                self.tensorboard = SummaryWriter(str(Path(run_dir) / "tensorboard"))
            except ImportError:
                pass

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        try:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as err:  # a full disk, say: said in one line, as for every file jaxqa writes
            raise Error(f"{self.path}: cannot write the file ({err.strerror})") from None
        if self.tensorboard and "step" in record:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.tensorboard.add_scalar(key, value, record["step"])
            self.tensorboard.flush()
