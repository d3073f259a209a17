"""The end of a run: the final model exported (compact when pruned, with its
report in RUN/pruning.json), and the run's summary."""

import json
import logging

import jax

from jaxqa.errors import write_file
from jaxqa.models import bert, compact
from jaxqa.training.loop import Throughput
from jaxqa.training.pruning import Pruning
from jaxqa.training.run_folder import MetricsLog, RunFolder

log = logging.getLogger("jaxqa.train")


def export_final(params: dict, kept: float, folder: RunFolder, prune: Pruning | None, max_seq_length: int) -> None:
    """Exports the final model to RUN/model; pruned by `prune` (to the share
    `kept` of the weights), compact, and reported in RUN/pruning.json with its
    sizes and FLOPs on windows of `max_seq_length` tokens."""
    final_config = folder.export(params, folder.run_dir / "model")
    if prune is None:
        return
    assert isinstance(folder.config, bert.Config)  # pruning is BERT's (settings refuse others)
    report = {
        "method": prune.method,
        "remaining_target": prune.remaining,
        "remaining": round(float(kept), 4),
        **compact.report(folder.config, final_config, max_seq_length),
    }
    path = folder.run_dir / "pruning.json"
    if jax.process_index() == 0:
        write_file(path, json.dumps(report, indent=2) + "\n")
    log.info(f"pruned by {prune.method}: {compact.describe(report)}; report in {path}")


def summarize(step: int, result: dict, throughput: Throughput, metrics: MetricsLog, folder: RunFolder) -> None:
    """Writes the summary of a run that ended at `step` with the final `result`: its time and throughput, its scores."""
    summary = {
        "steps": step,
        **throughput.summary(),
        **{key: result[key] for key in ("exact", "f1") if key in result},
    }
    metrics.write({"summary": summary})
    log.info(f"done: {json.dumps(summary)}; model in {folder.run_dir / 'model'}")
