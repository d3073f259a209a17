"""Training settings: defaults here, then a recipe (`--config`, by default the
model's shipped one in `configs/`, installed as `jaxqa.configs`), then command-line flags, each
overriding the one before.

`Settings` holds them in the groups that the phases of a run read (the
encoder, the data, the optimization, evaluation, distillation, pruning, the
devices, the run folder's output); a phase receives its group, not the whole.
Every setting also has a flat name, which is its flag (`max_seq_length` ->
`--max-seq-length`), its key in a recipe and in run.json: `Settings.flat()`
and `Settings.from_flat()` go between the two.

`validate` checks them all before any work, naming the flag at fault
(`validate_mesh`, the batch sizes against the device mesh). `trajectory` picks
those that decide what a run computes, which the run folder records so that a
rerun with other values is caught (`changed_settings`).
"""

import argparse
import contextlib
import dataclasses
import importlib
import importlib.util
import math
import traceback
import types
import typing
from pathlib import Path
from typing import get_type_hints

from jaxqa import compilation_cache, models
from jaxqa.configs import VARIANTS
from jaxqa.errors import Error
from jaxqa.models.execution import REMAT
from jaxqa.squad import buckets, sources
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


@contextlib.contextmanager
def blame(flag: str):
    """Prefixes any jaxqa error raised in the block with the flag whose value caused it."""
    try:
        yield
    except Error as err:
        raise SettingsError(f"{flag}: {err}") from None


def flag(default, help: str, name: str = ""):
    """A setting with its default and the help text of its flag; `name`, its
    flat name where the group calls it otherwise (`prune_remaining` is the
    pruning group's `remaining`)."""
    return dataclasses.field(default=default, metadata={"help": help, "name": name})


@dataclasses.dataclass(frozen=True)
class EncoderSettings:
    """The model a run trains, where its weights come from, and how it computes."""

    family: str = dataclasses.field(metadata={"help": "the encoder family", "name": "model"})
    size: str = flag("base", "a named size of the model (its SIZES); ignored when --init brings a config")
    init: str = flag("random", 'jaxqa checkpoint, Hugging Face folder or hub id, or "random"')
    tokenizer: str = flag("", "folder with the tokenizer files; empty: the --init folder")
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

    def remat_for(self, platform: str) -> str:
        """--remat, with auto resolved for `platform` ("cpu", "gpu", "tpu")."""
        return REMAT_AUTO.get(platform, "matmuls") if self.remat == "auto" else self.remat


@dataclasses.dataclass(frozen=True)
class DataSettings:
    """What a run trains and evaluates on, and how questions and contexts are cut into windows."""

    train_file: str = flag(
        "squad",
        "official SQuAD JSON, a flat .jsonl/.json/.csv/.parquet file, or a hub dataset NAME[:CONFIG][@SPLIT] "
        "(docs/data.md)",
    )
    eval_file: str = flag("squad", 'likewise (a hub dataset\'s split: validation); "" for none')
    question_column_name: str = flag(sources.Columns.question, sources.COLUMN_FLAGS["question"][1])
    context_column_name: str = flag(sources.Columns.context, sources.COLUMN_FLAGS["context"][1])
    answer_column_name: str = flag(sources.Columns.answers, sources.COLUMN_FLAGS["answers"][1])
    id_column_name: str = flag(sources.Columns.id, sources.COLUMN_FLAGS["id"][1])
    skip_bad_rows: bool = flag(False, sources.SKIP_HELP)
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

    @property
    def windows(self) -> FeatureSettings:
        return FeatureSettings(self.max_seq_length, self.doc_stride, self.max_query_length)

    @property
    def columns(self) -> sources.Columns:
        return sources.Columns(
            self.question_column_name, self.context_column_name, self.answer_column_name, self.id_column_name
        )


@dataclasses.dataclass(frozen=True)
class OptimizationSettings:
    """How many steps, of which batches, updated how."""

    optimizer: str = flag("lamb", " or ".join(OPTIMIZERS))
    learning_rate: float = flag(1e-3, "peak learning rate")
    warmup_proportion: float = flag(0.1, "share of the steps spent warming up linearly, then decaying linearly to 0")
    weight_decay: float = flag(0.01, "decoupled weight decay of kernels and embeddings")
    clip_norm: float = flag(1.0, "global gradient norm clipped to")
    epochs: float = flag(2.0, "passes over the training features")
    max_steps: int = flag(0, "0: as many as the epochs take")
    batch_size: int = flag(32, "sequences per optimizer step, over all devices and micro-batches")
    grad_accum: int = flag(1, "micro-batches per step")
    seed: int = flag(0, "seed of the data order, dropout and fresh weights")

    @property
    def micro_batch(self) -> int:
        """Sequences per micro-batch, over all devices."""
        return self.batch_size // self.grad_accum


@dataclasses.dataclass(frozen=True)
class EvaluationSettings:
    """How often, and how, the model is evaluated while it trains and at the end."""

    batch_size: int = flag(64, "sequences per evaluation batch", name="eval_batch_size")
    every: int = flag(0, "steps between evaluations; 0: only at the end", name="eval_every")
    null_score_diff_threshold: float = flag(0.0, 'SQuAD 2.0: answer "" when the null score beats the best span by more')


@dataclasses.dataclass(frozen=True)
class DistillationSettings:
    """The teacher a run distils from (none: plain fine-tuning) and the weight of its answers."""

    teacher: str = flag("", "fine-tuned checkpoint to distil from (any family with the same tokenizer); empty: none")
    alpha: float = flag(
        0.5,
        "with --teacher: the weight A of the distillation loss in "
        "A * distill_loss + (1 - A) * span_loss; 0 is plain fine-tuning",
        name="distill_alpha",
    )
    temperature: float = flag(
        2.0,
        "with --teacher: the temperature T that softens both models' start and "
        "end distributions; distill_loss = T^2 * (KL(start) + KL(end)) / 2",
        name="distill_temperature",
    )


@dataclasses.dataclass(frozen=True)
class PruningSettings:
    """Pruning while fine-tuning (none: the method is empty), and its schedule."""

    method: str = flag(
        "",
        f"BERT: prune while fine-tuning, by {', '.join(METHODS)}; the final model is compact (empty: no pruning)",
        name="prune",
    )
    remaining: float = flag(
        0.5, "with --prune: share of the encoder's Linear weights kept at the end", name="prune_remaining"
    )
    score_learning_rate: float = flag(
        1e-2,
        "with --prune movement, soft-movement or hybrid: peak learning rate "
        "of the scores (Adam, on the --learning-rate schedule's shape)",
        name="prune_score_learning_rate",
    )
    penalty: float = flag(
        400.0,
        "with --prune soft-movement or hybrid: final weight of the L1 penalty on the "
        "scores' sigmoids, growing with the share pruned",
        name="prune_penalty",
    )
    block: int = flag(
        32,
        "with --prune hybrid: edge of the square blocks of the attention kernels (smaller where a head is narrower)",
        name="prune_block",
    )
    initial_warmup: float = flag(
        1.0, "with --prune: learning-rate warm-ups before pruning starts", name="prune_initial_warmup"
    )
    final_warmup: float = flag(
        2.0, "with --prune: learning-rate warm-ups at the final share before the end", name="prune_final_warmup"
    )


@dataclasses.dataclass(frozen=True)
class DeviceSettings:
    """The processes of a run, the device mesh they make, and where compiled programs are kept."""

    mesh: str = flag("", "device mesh, e.g. data=4,model=2; empty: every device on data")
    fsdp: bool = flag(False, "also shard weights over the data axis")
    compilation_cache: str = flag("", compilation_cache.HELP)
    coordinator: str = flag("", "host:port of process 0, for several processes")
    num_processes: int = flag(1, "processes of a multi-host run")
    process_id: int = flag(0, "this process's index in a multi-host run")


@dataclasses.dataclass(frozen=True)
class OutputSettings:
    """The run folder: where it is, how often it is saved and logged to, what it keeps."""

    run_dir: str = flag("runs/{model}", "checkpoints, best and final model, metrics.jsonl")
    allow_changed_settings: bool = flag(
        False,
        "resume a run folder whose checkpoints were trained with other "
        "settings (the refusal lists them), going on with the new ones",
    )
    save_every: int = flag(500, "steps between checkpoints")
    keep: int = flag(3, "checkpoints kept (besides the best model)")
    log_every: int = flag(10, "steps between log lines (and non-finite checks)")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every setting of a run, in the groups its phases read."""

    encoder: EncoderSettings
    data: DataSettings
    optimization: OptimizationSettings
    evaluation: EvaluationSettings
    distillation: DistillationSettings
    pruning: PruningSettings
    devices: DeviceSettings
    output: OutputSettings

    @property
    def run_folder(self) -> Path:
        """--run-dir with its {model} filled in."""
        return Path(self.output.run_dir.format(model=self.encoder.family))

    def flat(self) -> dict:
        """Every setting by its flat name, in the order --help lists them."""
        return {name: getattr(getattr(self, group), field.name) for name, (group, field) in FIELDS.items()}

    @classmethod
    def from_flat(cls, values: dict) -> "Settings":
        """The settings that `values` gives by flat name, the others at their defaults."""
        given: dict[str, dict] = {group: {} for group in GROUPS}
        for name, value in values.items():
            group, field = FIELDS[name]
            given[group][field.name] = value
        return cls(**{group: kind(**given[group]) for group, kind in GROUPS.items()})


# The group classes by their attribute in `Settings`.
GROUPS: dict[str, type] = get_type_hints(Settings)
# The flat names, in the order --help lists them and run.json records them.
_ORDER = """
    model size init tokenizer train_file eval_file question_column_name context_column_name answer_column_name
    id_column_name skip_bad_rows max_train_examples max_eval_examples max_seq_length
    doc_stride max_query_length length_step optimizer learning_rate warmup_proportion weight_decay clip_norm
    epochs max_steps batch_size grad_accum eval_batch_size precision scan_layers remat attention_dropout mesh
    fsdp seed compilation_cache run_dir allow_changed_settings save_every keep eval_every log_every
    null_score_diff_threshold teacher distill_alpha distill_temperature prune prune_remaining
    prune_score_learning_rate prune_penalty prune_block prune_initial_warmup prune_final_warmup coordinator
    num_processes process_id
""".split()
# Every setting by its flat name: (its group's attribute in `Settings`, its field there).
FIELDS: dict[str, tuple[str, dataclasses.Field]] = dict(
    sorted(
        (
            (field.metadata["name"] or field.name, (group, field))
            for group in GROUPS
            for field in dataclasses.fields(GROUPS[group])
        ),
        key=lambda item: _ORDER.index(item[0]),  # a ValueError here: a setting without its place in _ORDER
    )
)


def _type(name: str):
    """The type of the setting whose flat name is `name`."""
    group, field = FIELDS[name]
    return get_type_hints(GROUPS[group])[field.name]


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
    """The settings that decide what a run computes, by flat name (all but RESUME_MAY_CHANGE)."""
    return {name: value for name, value in s.flat().items() if name not in RESUME_MAY_CHANGE}


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


def recorded(s: Settings, train_data: str | None, teacher_weights: str | None) -> dict:
    """What run.json records of a run: its `trajectory`, and the digests of its
    training data and (with a teacher) its teacher's weights (`DIGESTS`)."""
    record = {**trajectory(s), "train_data": train_data}
    if teacher_weights is not None:
        record["teacher_weights"] = teacher_weights
    return record


def parser(prog: str = "python -m jaxqa.train") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Fine-tunes an encoder on SQuAD.")
    p.add_argument(
        "--config",
        help=f"recipe: a shipped one by name ({', '.join(models.MODEL_TYPES)}) or a Python file "
        "with get_config(arg), then :ARG, e.g. bert:tiny (default: the --model's shipped recipe)",
    )
    for name, (_, field) in FIELDS.items():
        names = (_flag(name), *ALIASES.get(name, ()))
        kind = _type(name)
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
                required=name == "model",
                help=text,
                choices=models.MODEL_TYPES if name == "model" else None,
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
        try:
            spec_file.loader.exec_module(module)
            recipe = module.get_config(arg)
        except Exception as err:  # the recipe is the user's code: a syntax error, or whatever it raises
            raise SettingsError(f"--config {spec}: {_fault_in(path, err)}") from None
    if not isinstance(recipe, dict):
        raise SettingsError(f"--config {spec}: get_config returned {type(recipe).__name__}, not a dict of settings")
    unknown = set(recipe) - (set(FIELDS) - {"model"})
    if unknown:
        raise SettingsError(f"--config {spec}: setting(s) a recipe cannot hold: {sorted(unknown)}")
    for name, value in recipe.items():
        if not _is_a(value, _type(name)):
            raise SettingsError(f"--config {spec}: {name} must be {_type_name(_type(name))}, got {value!r:.40}")
    return {name: float(value) if _type(name) is float else value for name, value in recipe.items()}


def _fault_in(path: Path, err: Exception) -> str:
    """What went wrong in the recipe file `path`, and at which of its lines."""
    if isinstance(err, SyntaxError):
        return f"{path}, line {err.lineno}: {err.msg}"
    lines = [frame.lineno for frame in traceback.extract_tb(err.__traceback__) if Path(frame.filename) == path]
    where = f", line {lines[-1]}" if lines else ""
    reason = (str(err).splitlines() or [""])[0][:200]
    return f"{path}{where}: {type(err).__name__}: {reason}"


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
    return Settings.from_flat({**recipe, **flags})


# The least value of each integer setting, by flat name.
AT_LEAST = {
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


def validate(s: Settings) -> None:
    """Refuses settings that cannot make a run, naming the flag, before any work
    (the batch sizes against the mesh: `validate_mesh`): the integers' least
    values, then each group's own checks, and the run folder last."""
    flat = s.flat()
    for name, least in AT_LEAST.items():
        if flat[name] < least:
            raise SettingsError(f"{_flag(name)} {flat[name]}: must be at least {least}")
    _check_devices(s.devices)
    s.data.windows.check(_flag)
    _check_optimization(s.optimization)
    _check_encoder(s.encoder)
    _check_distillation(s.distillation)
    _check_pruning(s.pruning, s.encoder.family)
    if not math.isfinite(s.evaluation.null_score_diff_threshold):
        raise SettingsError(f"--null-score-diff-threshold {s.evaluation.null_score_diff_threshold}: must be finite")
    try:
        run_dir = s.run_folder
    except (KeyError, IndexError, ValueError):
        raise SettingsError(f"--run-dir {s.output.run_dir!r}: the only field it may hold is {{model}}") from None
    in_the_way = next(p for p in (run_dir.absolute(), *run_dir.absolute().parents) if p.exists())
    if not in_the_way.is_dir():
        raise SettingsError(f"--run-dir {run_dir}: {in_the_way} is a file, not a folder")


def _check_devices(d: DeviceSettings) -> None:
    if d.num_processes > 1 and not d.coordinator:
        raise SettingsError(f"--num-processes {d.num_processes}: needs --coordinator HOST:PORT (process 0's address)")
    if d.process_id >= d.num_processes:
        raise SettingsError(f"--process-id {d.process_id}: must be below --num-processes {d.num_processes}")


def _check_optimization(o: OptimizationSettings) -> None:
    if o.seed >= 2**32:
        raise SettingsError(f"--seed {o.seed}: must be below 2**32")
    if o.batch_size % o.grad_accum:
        raise SettingsError(f"--batch-size {o.batch_size} is not a multiple of --grad-accum {o.grad_accum}")
    if o.optimizer not in OPTIMIZERS:
        raise SettingsError(f"--optimizer {o.optimizer!r}: choose {' or '.join(OPTIMIZERS)}")
    if not 0 <= o.warmup_proportion < 1:
        raise SettingsError(f"--warmup-proportion {o.warmup_proportion}: must be in [0, 1)")
    for name in ("epochs", "learning_rate", "clip_norm"):
        if not 0 < getattr(o, name) < math.inf:  # also refuses nan
            raise SettingsError(f"{_flag(name)} {getattr(o, name)}: must be positive and finite")
    if not 0 <= o.weight_decay < math.inf:
        raise SettingsError(f"--weight-decay {o.weight_decay}: must be 0 or more, and finite")


def _check_encoder(e: EncoderSettings) -> None:
    if e.precision not in PRECISIONS:
        raise SettingsError(f"--precision {e.precision!r}: choose {', '.join(PRECISIONS)}")
    if e.remat != "auto" and e.remat not in REMAT:
        raise SettingsError(f"--remat {e.remat!r}: choose auto, {', '.join(REMAT)}")
    if e.attention_dropout is not None and not 0 <= e.attention_dropout < 1:  # also refuses nan
        raise SettingsError(f"--attention-dropout {e.attention_dropout}: must be in [0, 1)")


def _check_distillation(d: DistillationSettings) -> None:
    if not 0 < d.temperature < math.inf:  # also refuses nan
        raise SettingsError(f"--distill-temperature {d.temperature}: must be positive and finite")
    if not 0 <= d.alpha <= 1:  # also refuses nan
        raise SettingsError(f"--distill-alpha {d.alpha}: must be in [0, 1]")


def _check_pruning(p: PruningSettings, family: str) -> None:
    if p.method and p.method not in METHODS:
        raise SettingsError(f"--prune {p.method!r}: choose {', '.join(METHODS)}")
    if p.method and family != "bert":
        raise SettingsError(f"--prune {p.method}: pruning is built for bert models (BERT, MiniLM), not {family}")
    if not 0 < p.remaining <= 1:  # also refuses nan
        raise SettingsError(f"--prune-remaining {p.remaining}: must be in (0, 1]")
    for name in ("score_learning_rate", "block"):
        if not 0 < getattr(p, name) < math.inf:
            raise SettingsError(f"--prune-{name.replace('_', '-')} {getattr(p, name)}: must be positive and finite")
    for name in ("penalty", "initial_warmup", "final_warmup"):
        if not 0 <= getattr(p, name) < math.inf:
            raise SettingsError(f"--prune-{name.replace('_', '-')} {getattr(p, name)}: must be 0 or more, and finite")


def validate_mesh(s: Settings, data_axis: int, process_count: int) -> None:
    """Refuses batch sizes that do not split over the mesh's data axis (`data_axis`
    devices) and the processes."""
    o = s.optimization
    if o.micro_batch % data_axis:
        raise SettingsError(
            f"--batch-size {o.batch_size} / --grad-accum {o.grad_accum} = {o.micro_batch} sequences "
            f"per micro-batch, not divisible by the data axis ({data_axis} devices)"
        )
    if o.micro_batch % process_count:
        raise SettingsError(
            f"--batch-size {o.batch_size}: a micro-batch of {o.micro_batch} does not split over "
            f"{process_count} processes"
        )
    if s.evaluation.batch_size % data_axis:
        raise SettingsError(
            f"--eval-batch-size {s.evaluation.batch_size} is not divisible by the data axis ({data_axis})"
        )


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")
