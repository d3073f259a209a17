"""jaxqa checkpoint folders, and loading a model from one (or from Hugging Face).

A jaxqa checkpoint folder holds `config.json` (the Hugging Face config of the
model, so `transformers` and jaxqa read the same file), `params.safetensors`
(float32 parameters keyed by their jaxqa path, e.g. `layer_0/query/kernel`) and
the tokenizer files. Folders are written whole or not at all.
"""

import contextlib
import functools
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from safetensors.numpy import save_file

from jaxqa import hf_weights, models
from jaxqa.hf_weights import ConversionError

PARAMS_FILE = "params.safetensors"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
HUB_FILES = ("config.json", "*.safetensors", "model.safetensors.index.json", "pytorch_model.bin", *TOKENIZER_FILES)


class Pretrained:
    """A model ready to run: `model(input_ids, attention_mask, token_type_ids)` gives
    `(start_logits, end_logits)`, each (B, T) float32."""

    def __init__(self, model_type: str, config, params, folder: Path, dtype=jnp.float32, param_dtype=jnp.float32):
        self.model_type = model_type
        self.config = config
        self.folder = folder
        self.module = models.family(model_type).Model(config, dtype=dtype, param_dtype=param_dtype)
        self.params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, param_dtype), params)

    @functools.cached_property
    def tokenizer(self):
        from jaxqa.tokenizer import load_tokenizer

        return load_tokenizer(self.folder)

    @functools.cached_property
    def _logits(self):
        return jax.jit(lambda params, *batch: self.module.apply({"params": params}, *batch))

    @functools.cached_property
    def _encode(self):
        return jax.jit(lambda params, *batch: self.module.apply({"params": params}, *batch, method="encode"))

    def __call__(self, input_ids, attention_mask, token_type_ids):
        return self._logits(self.params, input_ids, attention_mask, token_type_ids)

    def encode(self, input_ids, attention_mask, token_type_ids):
        """The encoder's last hidden states, (B, T, D)."""
        return self._encode(self.params, input_ids, attention_mask, token_type_ids)

    def save(self, folder: str | Path, overwrite: bool = False) -> Path:
        return save_pretrained(folder, self.model_type, self.config, self.params, self.folder, overwrite)


@contextlib.contextmanager
def atomic_folder(folder: str | Path, overwrite: bool = False):
    """Yields a temporary folder that replaces `folder` only if the block succeeds."""
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())) and not overwrite:
        raise FileExistsError(f"{folder} already exists and is not empty (pass --overwrite to replace it)")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        yield tmp
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def copy_tokenizer(src: Path | None, dst: Path) -> None:
    for name in TOKENIZER_FILES if src else ():
        if (Path(src) / name).is_file():
            shutil.copy2(Path(src) / name, dst / name)


def save_pretrained(folder, model_type: str, config, params, tokenizer_from: Path | None, overwrite: bool = False) -> Path:
    """Writes a jaxqa checkpoint folder atomically: a failure leaves nothing at `folder`."""
    with atomic_folder(folder, overwrite) as tmp:
        (tmp / "config.json").write_text(json.dumps(config.to_hf(), indent=2) + "\n")
        flat = traverse_util.flatten_dict(jax.device_get(params), sep="/")
        save_file({key: np.ascontiguousarray(value, np.float32) for key, value in flat.items()}, tmp / PARAMS_FILE,
                  metadata={"format": "jaxqa", "model_type": model_type})
        copy_tokenizer(tokenizer_from, tmp)
    return Path(folder)


def resolve(path: str | Path) -> Path:
    """A local folder as it is; otherwise a Hugging Face hub id, downloaded (needs the network)."""
    folder = Path(path)
    if folder.exists():
        if not folder.is_dir():
            raise ConversionError(f"{folder}: not a folder")
        return folder
    if str(path).count("/") > 1 or str(path).startswith((".", "/")):
        raise ConversionError(f"{path}: no such folder")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(path), allow_patterns=list(HUB_FILES)))
    except Exception as err:  # offline, unknown repo, ...
        raise ConversionError(f"{path}: not a local folder, and the hub download failed ({err})") from None


def read_config(folder: Path) -> tuple[str, Any]:
    """(model_type, jaxqa config) from a folder's config.json."""
    hf = hf_weights.read_config(folder)
    try:
        fam = models.family(hf["model_type"])
    except ValueError as err:
        raise ConversionError(f"{folder / 'config.json'}: {err}") from None
    try:
        return fam.MODEL_TYPE, fam.Config.from_hf(hf)
    except (ValueError, TypeError) as err:
        raise ConversionError(f"{folder / 'config.json'}: {err}") from None


def from_hf_folder(folder: Path, seed: int = 0) -> tuple[str, Any, dict]:
    """Converts a Hugging Face folder in memory: (model_type, config, params).

    A checkpoint without a span head (a pretrained encoder) gets a freshly
    initialised one, and says so on stderr.
    """
    model_type, config = read_config(folder)
    params, report = hf_weights.params_from_hf(model_type, config, hf_weights.read_state(folder))
    if report.dropped:
        groups = sorted({".".join(name.split(".")[:2]) for name in report.dropped})
        print(f"{folder}: dropped {len(report.dropped)} tensor(s) a span model does not use ({', '.join(groups)})", file=sys.stderr)
    if report.fresh_head:
        print(f"{folder}: no span head (qa_outputs) in the checkpoint; initialised a fresh one (seed {seed})", file=sys.stderr)
        fresh = nn.meta.unbox(models.init_params(models.family(model_type).Model(config), jax.random.key(seed)))
        params = {**params, hf_weights.HEAD: jax.device_get(fresh[hf_weights.HEAD])}
    return model_type, config, params


def load_pretrained(path: str | Path, dtype=jnp.float32, param_dtype=jnp.float32) -> Pretrained:
    """A jaxqa checkpoint folder, a Hugging Face folder (converted on the fly) or hub id."""
    folder = resolve(path)
    if (folder / PARAMS_FILE).is_file():
        model_type, config = read_config(folder)
        params = _read_params(folder / PARAMS_FILE)
        expected = traverse_util.flatten_dict(nn.meta.unbox(models.abstract_params(models.family(model_type).Model(config))), sep="/")
        got = traverse_util.flatten_dict(params, sep="/")
        if set(got) != set(expected):
            raise ConversionError(
                f"{folder / PARAMS_FILE}: does not match its config.json "
                f"(missing {sorted(set(expected) - set(got))[:3]}, unexpected {sorted(set(got) - set(expected))[:3]})"
            )
        for key, value in got.items():
            if value.shape != expected[key].shape:
                raise ConversionError(f"{folder / PARAMS_FILE}: {key} has shape {value.shape}, config.json needs {expected[key].shape}")
    else:
        model_type, config, params = from_hf_folder(folder)
    return Pretrained(model_type, config, params, folder, dtype, param_dtype)


def _read_params(path: Path) -> dict:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            flat = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as err:
        raise ConversionError(f"{path}: cannot read ({err})") from None
    return traverse_util.unflatten_dict(flat, sep="/")
