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

from jaxqa import models

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


@dataclasses.dataclass(frozen=True)
class Settings:
    model: str  # bert, squeezebert or mobilebert
    size: str = "base"  # a named size of the model (its SIZES); ignored when --init brings a config
    init: str = "random"  # jaxqa checkpoint, Hugging Face folder or hub id, or "random"
    tokenizer: str = ""  # folder with the tokenizer files; default: the --init folder
    train_file: str = "squad"  # official SQuAD JSON, or the hub dataset name squad / squad_v2
    eval_file: str = "squad"  # likewise; "" for none
    max_train_examples: int = 0  # 0: all
    max_eval_examples: int = 0  # 0: all
    max_seq_length: int = 384
    doc_stride: int = 128
    max_query_length: int = 64
    optimizer: str = "lamb"  # lamb or adamw
    learning_rate: float = 1e-3
    warmup_proportion: float = 0.1
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    epochs: float = 2.0
    max_steps: int = 0  # 0: as many as the epochs take
    batch_size: int = 32  # sequences per optimizer step, over all devices and micro-batches
    grad_accum: int = 1  # micro-batches per step
    eval_batch_size: int = 64
    precision: str = "auto"  # bf16 (float32 master weights), fp32, or auto: bf16 on accelerators, fp32 on CPUs
    mesh: str = ""  # e.g. data=4,model=2; default: every device on data
    fsdp: bool = False  # also shard weights over the data axis
    seed: int = 0
    run_dir: str = "runs/{model}"
    save_every: int = 500  # steps between checkpoints
    keep: int = 3  # checkpoints kept (besides the best model)
    eval_every: int = 0  # steps between evaluations; 0: only at the end
    log_every: int = 10
    null_score_diff_threshold: float = 0.0  # SQuAD 2.0: answer "" when the null score beats the best span by more
    coordinator: str = ""  # host:port of process 0, for several processes
    num_processes: int = 1
    process_id: int = 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jaxqa.train", description="Fine-tunes an encoder on SQuAD.")
    p.add_argument("--config", help="recipe file with get_config() (default: configs/<model>.py)")
    hints = get_type_hints(Settings)
    for field in dataclasses.fields(Settings):
        flag = "--" + field.name.replace("_", "-")
        kind = hints[field.name]
        if kind is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            p.add_argument(flag, type=kind, default=None, required=field.name == "model",
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
