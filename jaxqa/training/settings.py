"""Training settings: defaults here, then a recipe (`--config`, by default the
model's shipped one in `configs/`, installed as `jaxqa.configs`), then command-line flags, each
overriding the one before.

Every field of `Settings` is a flag (`max_seq_length` -> `--max-seq-length`).
`validate` checks them all before any work, naming the flag at fault
(`validate_mesh`, the batch sizes against the device mesh). `trajectory` picks
those that decide what a run computes, which the run folder records so that a
rerun with other values is caught (`changed_settings`).
"""

import argparse
import dataclasses
import importlib
import importlib.util
import math
import types
import typing
from pathlib import Path
from typing import get_type_hints

from jaxqa import compilation_cache, models
from jaxqa.configs import VARIANTS
from jaxqa.errors import Error
from jaxqa.models.execution import REMAT
from jaxqa.squad import buckets
from jaxqa.squad.features import FeatureSettings
from jaxqa.training.optim import OPTIMIZERS
from jaxqa.training.pruning import METHODS

PRECISIONS = ("auto", "bf16", "fp32")
# `--remat auto` by platform. On a CPU, keeping only the matrix products' outputs
# holds a fraction of the temporaries of keeping everything and steps as fast
# (recomputing norms, activations and attention costs no more than storing and
# reading them back); recomputing whole layers holds less still but steps
# slower (BERT-base: benchmarks/results/encoder_core_memory_step_cpu.json,
# in docs/results.md). Accelerators take the same until measured there.
REMAT_AUTO = {"cpu": "matmuls", "gpu": "matmuls", "tpu": "matmuls"}


# Other spellings a flag answers to: every command takes --max-seq-len and --max-seq-length.
ALIASES = {"max_seq_length": ("--max-seq-len",)}


class SettingsError(Error):
    """Settings that cannot make a run; the message names the flag."""


def flag(default, help: str):
    """A setting with its default and the help text of its flag."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class Settings:
    model: str = dataclasses.field(metadata={"help": "the encoder family"})
    size: str = flag("base", "a named size of the model (its SIZES); ignored when --init brings a config")
    init: str = flag("random", 'jaxqa checkpoint, Hugging Face folder or hub id, or "random"')
    tokenizer: str = flag("", "folder with the tokenizer files; empty: the --init folder")
    train_file: str = flag("squad", "official SQuAD JSON, or the hub dataset name squad / squad_v2")
    eval_file: str = flag("squad", 'likewise; "" for none')
    max_train_examples: int = flag(0, "questions taken from the start of the training file; 0: all")
    max_eval_examples: int = flag(0, "questions taken from the start of the evaluation file; 0: all")
    max_seq_length: int = flag(384, "tokens per window, special tokens included")
    doc_stride: int = flag(128, "context tokens shared by consecutive windows")
    max_query_length: int = flag(64, "question tokens kept")
    length_step: int = flag(
        buckets.LENGTH_STEP,
        "batches group windows of like length and are padded to the next "
        "multiple of this many tokens (evaluation too); 0: every window padded to --max-seq-length",
    )
    optimizer: str = flag("lamb", " or ".join(OPTIMIZERS))
    learning_rate: float = flag(1e-3, "peak learning rate")
    warmup_proportion: float = flag(0.1, "share of the steps spent warming up linearly, then decaying linearly to 0")
    weight_decay: float = flag(0.01, "decoupled weight decay of kernels and embeddings")
    clip_norm: float = flag(1.0, "global gradient norm clipped to")
    epochs: float = flag(2.0, "passes over the training features")
    max_steps: int = flag(0, "0: as many as the epochs take")
    batch_size: int = flag(32, "sequences per optimizer step, over all devices and micro-batches")
    grad_accum: int = flag(1, "micro-batches per step")
    eval_batch_size: int = flag(64, "sequences per evaluation batch")
    precision: str = flag(
        "auto",
        "bf16 (float32 master weights), fp32, or auto: bf16 on accelerators and CPUs with AMX, fp32 on other CPUs",
    )
    scan_layers: bool = flag(
        True,
        "run each run of like layers as one scanned body, compiled once; "
        "--no-scan-layers compiles every layer on its own (the same numbers)",
    )
    remat: str = flag(
        "auto",
        f"what the backward pass recomputes instead of keeping: {', '.join(REMAT)}, or auto "
        f"({', '.join(f'{platform}: {mode}' for platform, mode in REMAT_AUTO.items())})",
    )
    attention_dropout: float | None = flag(
        None,
        "attention's dropout rate in training, in place of the model "
        "config's; 0 takes the fused attention kernel (default: the config's)",
    )
    mesh: str = flag("", "device mesh, e.g. data=4,model=2; empty: every device on data")
    fsdp: bool = flag(False, "also shard weights over the data axis")
    seed: int = flag(0, "seed of the data order, dropout and fresh weights")
    compilation_cache: str = flag("", compilation_cache.HELP)
    run_dir: str = flag("runs/{model}", "checkpoints, best and final model, metrics.jsonl")
    allow_changed_settings: bool = flag(
        False,
        "resume a run folder whose checkpoints were trained with other "
        "settings (the refusal lists them), going on with the new ones",
    )
    save_every: int = flag(500, "steps between checkpoints")
    keep: int = flag(3, "checkpoints kept (besides the best model)")
    eval_every: int = flag(0, "steps between evaluations; 0: only at the end")
    log_every: int = flag(10, "steps between log lines (and non-finite checks)")
    null_score_diff_threshold: float = flag(0.0, 'SQuAD 2.0: answer "" when the null score beats the best span by more')
    teacher: str = flag("", "fine-tuned checkpoint to distil from (any family with the same tokenizer); empty: none")
    distill_alpha: float = flag(
        0.5,
        "with --teacher: the weight A of the distillation loss in "
        "A * distill_loss + (1 - A) * span_loss; 0 is plain fine-tuning",
    )
    distill_temperature: float = flag(
        2.0,
        "with --teacher: the temperature T that softens both models' start and "
        "end distributions; distill_loss = T^2 * (KL(start) + KL(end)) / 2",
    )
    prune: str = flag(
        "", f"BERT: prune while fine-tuning, by {', '.join(METHODS)}; the final model is compact (empty: no pruning)"
    )
    prune_remaining: float = flag(0.5, "with --prune: share of the encoder's Linear weights kept at the end")
    prune_score_learning_rate: float = flag(
        1e-2,
        "with --prune movement, soft-movement or hybrid: peak learning rate "
        "of the scores (Adam, on the --learning-rate schedule's shape)",
    )
    prune_penalty: float = flag(
        400.0,
        "with --prune soft-movement or hybrid: final weight of the L1 penalty on the "
        "scores' sigmoids, growing with the share pruned",
    )
    prune_block: int = flag(
        32, "with --prune hybrid: edge of the square blocks of the attention kernels (smaller where a head is narrower)"
    )
    prune_initial_warmup: float = flag(1.0, "with --prune: learning-rate warm-ups before pruning starts")
    prune_final_warmup: float = flag(2.0, "with --prune: learning-rate warm-ups at the final share before the end")
    coordinator: str = flag("", "host:port of process 0, for several processes")
    num_processes: int = flag(1, "processes of a multi-host run")
    process_id: int = flag(0, "this process's index in a multi-host run")

    @property
    def micro_batch(self) -> int:
        """Sequences per micro-batch, over all devices."""
        return self.batch_size // self.grad_accum

    @property
    def run_folder(self) -> Path:
        """--run-dir with its {model} filled in."""
        return Path(self.run_dir.format(model=self.model))


# What a resumed run may change: where and how it runs, logs, saves and evaluates,
# not what it computes (the model itself is the run folder's own check). Every
# other setting is recorded in the run folder, and resuming with another value
# is refused unless --allow-changed-settings: the same command resumes exactly.
RESUME_MAY_CHANGE = frozenset(
    {
        "model",
        "size",
        "run_dir",
        "allow_changed_settings",
        "mesh",
        "fsdp",
        "compilation_cache",
        "coordinator",
        "num_processes",
        "process_id",
        "save_every",
        "keep",
        "log_every",
        "eval_every",
        "eval_file",
        "max_eval_examples",
        "eval_batch_size",
        "null_score_diff_threshold",
    }
)


def trajectory(s: Settings) -> dict:
    """The settings that decide what a run computes, by name (all but RESUME_MAY_CHANGE)."""
    return {f.name: getattr(s, f.name) for f in dataclasses.fields(s) if f.name not in RESUME_MAY_CHANGE}


# What a run folder records besides the settings: digests of what the run computes from.
DIGESTS = {"teacher_weights": "the --teacher's weights", "train_data": "the --train-file's contents"}


def changed_settings(recorded: dict, now: dict) -> list[str]:
    """`--flag: old -> new` for each setting in `now` that differs from its
    `recorded` value, and what changed of each digest (`DIGESTS`); one that was
    not recorded, by an older jaxqa, is not compared."""
    return [
        f"{DIGESTS[name]} changed" if name in DIGESTS else f"{_flag(name)}: {recorded[name]!r} -> {value!r}"
        for name, value in now.items()
        if name in recorded and recorded[name] != value
    ]


def parser(prog: str = "python -m jaxqa.train") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Fine-tunes an encoder on SQuAD.")
    p.add_argument(
        "--config",
        help=f"recipe: a shipped one by name ({', '.join(models.MODEL_TYPES)}) or a Python file "
        "with get_config(arg), then :ARG, e.g. bert:tiny (default: the --model's shipped recipe)",
    )
    hints = get_type_hints(Settings)
    for field in dataclasses.fields(Settings):
        names = (_flag(field.name), *ALIASES.get(field.name, ()))
        kind = hints[field.name]
        kind = next(arg for arg in typing.get_args(kind) if arg is not type(None)) if typing.get_args(kind) else kind
        text = field.metadata["help"]
        if field.default is not dataclasses.MISSING:
            text += f" (default: the recipe's, else {field.default!r})"
        if kind is bool:
            p.add_argument(*names, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            p.add_argument(
                *names,
                type=kind,
                default=None,
                required=field.name == "model",
                help=text,
                choices=models.MODEL_TYPES if field.name == "model" else None,
            )
    return p


def load_recipe(spec: str) -> dict:
    """The settings of a recipe `NAME[:ARG]`: a shipped recipe's name, or a file's path."""
    name, _, arg = spec.partition(":")
    if name in models.MODEL_TYPES:
        if arg not in VARIANTS:
            raise SettingsError(f"--config {spec}: the shipped recipes take {' or '.join(repr(v) for v in VARIANTS)}")
        recipe = importlib.import_module(f"jaxqa.configs.{name}").get_config(arg)
    else:
        path = Path(name)
        if not path.is_file():
            raise SettingsError(
                f"--config {spec}: no such file, nor a shipped recipe ({', '.join(models.MODEL_TYPES)})"
            )
        spec_file = importlib.util.spec_from_file_location(path.stem, path)
        assert spec_file is not None and spec_file.loader is not None  # a .py file that exists
        module = types.ModuleType(path.stem)
        spec_file.loader.exec_module(module)
        recipe = module.get_config(arg)
    if not isinstance(recipe, dict):
        raise SettingsError(f"--config {spec}: get_config returned {type(recipe).__name__}, not a dict of settings")
    unknown = set(recipe) - {f.name for f in dataclasses.fields(Settings) if f.name != "model"}
    if unknown:
        raise SettingsError(f"--config {spec}: setting(s) a recipe cannot hold: {sorted(unknown)}")
    hints = get_type_hints(Settings)
    for name, value in recipe.items():
        if not _is_a(value, hints[name]):
            raise SettingsError(f"--config {spec}: {name} must be {_type_name(hints[name])}, got {value!r:.40}")
    return {name: float(value) if hints[name] is float else value for name, value in recipe.items()}


def _is_a(value, kind) -> bool:
    """Whether a recipe's value is of a setting's type, read strictly: a bool is
    no number and a number no bool; an int stands for a float; None only where
    the setting may be None."""
    if typing.get_args(kind):  # X | None
        return value is None or any(_is_a(value, arg) for arg in typing.get_args(kind) if arg is not type(None))
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _type_name(kind) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    if typing.get_args(kind):
        return " or ".join([names[arg] for arg in typing.get_args(kind) if arg is not type(None)] + ["None"])
    return names[kind]


def parse(argv=None, prog: str = "python -m jaxqa.train") -> Settings:
    args = vars(parser(prog).parse_args(argv))
    recipe = load_recipe(args.pop("config") or args["model"])
    flags = {key: value for key, value in args.items() if value is not None}
    return Settings(**{**recipe, **flags})


def validate(s: Settings) -> None:
    """Refuses settings that cannot make a run, naming the flag, before any work
    (the batch sizes against the mesh: `validate_mesh`)."""
    at_least = {
        "batch_size": 1,
        "grad_accum": 1,
        "eval_batch_size": 1,
        "save_every": 1,
        "log_every": 1,
        "keep": 1,
        "seed": 0,
        "max_steps": 0,
        "eval_every": 0,
        "max_train_examples": 0,
        "max_eval_examples": 0,
        "num_processes": 1,
        "process_id": 0,
        "length_step": 0,
    }
    for name, least in at_least.items():
        if getattr(s, name) < least:
            raise SettingsError(f"{_flag(name)} {getattr(s, name)}: must be at least {least}")
    if s.seed >= 2**32:
        raise SettingsError(f"--seed {s.seed}: must be below 2**32")
    if s.num_processes > 1 and not s.coordinator:
        raise SettingsError(f"--num-processes {s.num_processes}: needs --coordinator HOST:PORT (process 0's address)")
    if s.process_id >= s.num_processes:
        raise SettingsError(f"--process-id {s.process_id}: must be below --num-processes {s.num_processes}")
    FeatureSettings(s.max_seq_length, s.doc_stride, s.max_query_length).check(_flag)
    if s.batch_size % s.grad_accum:
        raise SettingsError(f"--batch-size {s.batch_size} is not a multiple of --grad-accum {s.grad_accum}")
    if s.precision not in PRECISIONS:
        raise SettingsError(f"--precision {s.precision!r}: choose {', '.join(PRECISIONS)}")
    if s.remat != "auto" and s.remat not in REMAT:
        raise SettingsError(f"--remat {s.remat!r}: choose auto, {', '.join(REMAT)}")
    if s.attention_dropout is not None and not 0 <= s.attention_dropout < 1:  # also refuses nan
        raise SettingsError(f"--attention-dropout {s.attention_dropout}: must be in [0, 1)")
    if s.optimizer not in OPTIMIZERS:
        raise SettingsError(f"--optimizer {s.optimizer!r}: choose {' or '.join(OPTIMIZERS)}")
    if not 0 <= s.warmup_proportion < 1:
        raise SettingsError(f"--warmup-proportion {s.warmup_proportion}: must be in [0, 1)")
    for name in ("epochs", "learning_rate", "clip_norm", "distill_temperature"):
        if not 0 < getattr(s, name) < math.inf:  # also refuses nan
            raise SettingsError(f"{_flag(name)} {getattr(s, name)}: must be positive and finite")
    if s.prune and s.prune not in METHODS:
        raise SettingsError(f"--prune {s.prune!r}: choose {', '.join(METHODS)}")
    if s.prune and s.model != "bert":
        raise SettingsError(f"--prune {s.prune}: pruning is built for bert models (BERT, MiniLM), not {s.model}")
    if not 0 < s.prune_remaining <= 1:  # also refuses nan
        raise SettingsError(f"--prune-remaining {s.prune_remaining}: must be in (0, 1]")
    for name in ("prune_score_learning_rate", "prune_block"):
        if not 0 < getattr(s, name) < math.inf:
            raise SettingsError(f"{_flag(name)} {getattr(s, name)}: must be positive and finite")
    for name in ("prune_penalty", "prune_initial_warmup", "prune_final_warmup"):
        if not 0 <= getattr(s, name) < math.inf:
            raise SettingsError(f"{_flag(name)} {getattr(s, name)}: must be 0 or more, and finite")
    if not 0 <= s.distill_alpha <= 1:  # also refuses nan
        raise SettingsError(f"--distill-alpha {s.distill_alpha}: must be in [0, 1]")
    if not 0 <= s.weight_decay < math.inf:
        raise SettingsError(f"--weight-decay {s.weight_decay}: must be 0 or more, and finite")
    if not math.isfinite(s.null_score_diff_threshold):
        raise SettingsError(f"--null-score-diff-threshold {s.null_score_diff_threshold}: must be finite")
    try:
        run_dir = s.run_folder
    except (KeyError, IndexError, ValueError):
        raise SettingsError(f"--run-dir {s.run_dir!r}: the only field it may hold is {{model}}") from None
    in_the_way = next(p for p in (run_dir.absolute(), *run_dir.absolute().parents) if p.exists())
    if not in_the_way.is_dir():
        raise SettingsError(f"--run-dir {run_dir}: {in_the_way} is a file, not a folder")


def validate_mesh(s: Settings, data_axis: int, process_count: int) -> None:
    """Refuses batch sizes that do not split over the mesh's data axis (`data_axis`
    devices) and the processes."""
    if s.micro_batch % data_axis:
        raise SettingsError(
            f"--batch-size {s.batch_size} / --grad-accum {s.grad_accum} = {s.micro_batch} sequences "
            f"per micro-batch, not divisible by the data axis ({data_axis} devices)"
        )
    if s.micro_batch % process_count:
        raise SettingsError(
            f"--batch-size {s.batch_size}: a micro-batch of {s.micro_batch} does not split over "
            f"{process_count} processes"
        )
    if s.eval_batch_size % data_axis:
        raise SettingsError(f"--eval-batch-size {s.eval_batch_size} is not divisible by the data axis ({data_axis})")


def remat_for(s: Settings, platform: str) -> str:
    """--remat, with auto resolved for `platform` ("cpu", "gpu", "tpu")."""
    return REMAT_AUTO.get(platform, "matmuls") if s.remat == "auto" else s.remat


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")
