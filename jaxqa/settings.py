"""Training settings: defaults here, the model's recipe in `configs/<model>.py`,
then command-line flags, each overriding the one before.

Every field of `Settings` is a flag (`max_seq_length` -> `--max-seq-length`).
"""

import argparse
import dataclasses
import importlib.util
import types
from pathlib import Path
from typing import get_type_hints

from jaxqa import compilation_cache, models

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


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
    optimizer: str = flag("lamb", "lamb or adamw")
    learning_rate: float = flag(1e-3, "peak learning rate")
    warmup_proportion: float = flag(0.1, "share of the steps spent warming up linearly, then decaying linearly to 0")
    weight_decay: float = flag(0.01, "decoupled weight decay of kernels and embeddings")
    clip_norm: float = flag(1.0, "global gradient norm clipped to")
    epochs: float = flag(2.0, "passes over the training features")
    max_steps: int = flag(0, "0: as many as the epochs take")
    batch_size: int = flag(32, "sequences per optimizer step, over all devices and micro-batches")
    grad_accum: int = flag(1, "micro-batches per step")
    eval_batch_size: int = flag(64, "sequences per evaluation batch")
    precision: str = flag("auto", "bf16 (float32 master weights), fp32, or auto: bf16 on accelerators, fp32 on CPUs")
    mesh: str = flag("", "device mesh, e.g. data=4,model=2; empty: every device on data")
    fsdp: bool = flag(False, "also shard weights over the data axis")
    seed: int = flag(0, "seed of the data order, dropout and fresh weights")
    compilation_cache: str = flag("", compilation_cache.HELP)
    run_dir: str = flag("runs/{model}", "checkpoints, best and final model, metrics.jsonl")
    save_every: int = flag(500, "steps between checkpoints")
    keep: int = flag(3, "checkpoints kept (besides the best model)")
    eval_every: int = flag(0, "steps between evaluations; 0: only at the end")
    log_every: int = flag(10, "steps between log lines (and non-finite checks)")
    null_score_diff_threshold: float = flag(0.0, 'SQuAD 2.0: answer "" when the null score beats the best span by more')
    coordinator: str = flag("", "host:port of process 0, for several processes")
    num_processes: int = flag(1, "processes of a multi-host run")
    process_id: int = flag(0, "this process's index in a multi-host run")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jaxqa.train", description="Fine-tunes an encoder on SQuAD.")
    p.add_argument("--config", help="recipe file with get_config() (default: configs/<model>.py)")
    hints = get_type_hints(Settings)
    for field in dataclasses.fields(Settings):
        name = "--" + field.name.replace("_", "-")
        kind = hints[field.name]
        text = field.metadata["help"]
        if field.default is not dataclasses.MISSING:
            text += f" (default: the recipe's, else {field.default!r})"
        if kind is bool:
            p.add_argument(name, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            p.add_argument(name, type=kind, default=None, required=field.name == "model", help=text,
                           choices=models.MODEL_TYPES if field.name == "model" else None)
    return p


def load_recipe(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"--config {path}: no such file (recipes live in configs/ of a jaxqa checkout)")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = types.ModuleType(path.stem)
    spec.loader.exec_module(module)
    recipe = module.get_config()
    unknown = set(recipe) - {f.name for f in dataclasses.fields(Settings)}
    if unknown:
        raise ValueError(f"{path}: unknown setting(s) {sorted(unknown)}")
    return recipe


def parse(argv=None) -> Settings:
    args = vars(parser().parse_args(argv))
    config = Path(args.pop("config") or CONFIG_DIR / f"{args['model']}.py")
    flags = {key: value for key, value in args.items() if value is not None}
    return Settings(**{**load_recipe(config), **flags})
