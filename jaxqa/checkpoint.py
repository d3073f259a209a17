"""Checkpoint folders: the only module that reads and writes weights files.

A jaxqa checkpoint folder holds `config.json` (the Hugging Face config of the
model, so `transformers` and jaxqa read the same file), `params.safetensors`
(float32 parameters keyed by their jaxqa path, e.g. `layer_0/query/kernel`; in
an int8 checkpoint the encoder kernels are int8, each with its float32
`kernel_scale`, see `jaxqa.precision`) and the tokenizer files. Folders are
written whole or not at all.

A Hugging Face folder (`model.safetensors`, a sharded index, or
`pytorch_model.bin`) is read here and converted in memory by the pure functions
of `jaxqa.models.convert`, and written back by `export_hf`. The commands that
convert are in `convert/` (installed as `jaxqa.convert`); the model that runs is
`jaxqa.pretrained`.
"""

import contextlib
import ctypes
import dataclasses
import errno
import hashlib
import json
import logging
import os
import pickle
import secrets
import shutil
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from flax import traverse_util
from safetensors import safe_open
from safetensors.numpy import save

from jaxqa import models
from jaxqa.export.format import EXPORTS_FOLDER
from jaxqa.models import compact, convert
from jaxqa.models.convert import ConversionError
from jaxqa.models.encoder import SpanModel, file_shapes, per_layer, stacked
from jaxqa.precision import dequantized, is_quantized, precision_of
from jaxqa.squad.tokenizer import TOKENIZER_FILES

PARAMS_FILE = "params.safetensors"
HUB_FILES = ("config.json", "*.safetensors", "model.safetensors.index.json", "pytorch_model.bin", *TOKENIZER_FILES)

log = logging.getLogger("jaxqa.checkpoint")


@dataclasses.dataclass(frozen=True)
class Source:
    """A checkpoint folder (jaxqa or Hugging Face) whose config.json has been read;
    its weights are read only when asked for."""

    folder: Path
    model_type: str
    config: Any

    def read_params(self, seed: int = 0, as_stored: bool = False, need_head: str = "") -> dict:
        """The float32 parameters as the model holds them (`encoder.stacked`),
        read from a jaxqa folder (an int8 one's dequantized, or `as_stored`) or
        converted from a Hugging Face one, every value finite. A Hugging Face
        encoder without a span head gets a freshly initialised one (from
        `seed`), and says so (a warning); with `need_head` (why a trained head
        is needed) it is refused instead."""
        if (self.folder / PARAMS_FILE).is_file():
            params = _finite(self.config, self._read_jaxqa_params(), self.folder / PARAMS_FILE)
            return params if as_stored else dequantized(params)
        state = _read_hf_state(self.folder)
        try:
            params, report = convert.params_from_hf(self.model_type, self.config, state)
        except ConversionError as err:
            raise ConversionError(f"{self.folder}: {err}") from None
        params = _finite(self.config, params, self.folder)
        if report.fresh_head and need_head:
            raise ConversionError(f"{self.folder}: no span head (qa_outputs) in the checkpoint; {need_head}")
        if report.dropped:
            groups = sorted({".".join(name.split(".")[:2]) for name in report.dropped})
            log.info(
                f"{self.folder}: dropped {len(report.dropped)} tensor(s) a span model does not use ({', '.join(groups)})"
            )
        if report.fresh_head:
            log.warning(
                f"{self.folder}: no span head (qa_outputs) in the checkpoint; initialised a fresh one (seed {seed})"
            )
            model = SpanModel(self.config)
            width = nn.meta.unbox(models.abstract_params(model))[convert.HEAD]["kernel"].shape[0]  # no weights made
            head = model.init(jax.random.key(seed), np.zeros((1, 1, width), np.float32), method="span")["params"]
            params = {**params, convert.HEAD: jax.device_get(nn.meta.unbox(head[convert.HEAD]))}
        return params

    def _read_jaxqa_params(self) -> dict:
        path = self.folder / PARAMS_FILE
        got = _read_safetensors(path)
        expected = file_shapes(self.config)
        for key, value in got.items():
            if value.dtype != np.int8 and not convert.is_floating(value):
                raise ConversionError(
                    f"{path}: {key} is {value.dtype}; a weight must be floating point (or an int8 kernel)"
                )
        for key in [key for key, value in got.items() if value.dtype == np.int8]:  # an int8 checkpoint's kernels
            kernel = expected[key].shape if key in expected and is_quantized(key) else None
            if kernel is None or (key + "_scale") not in got:
                raise ConversionError(f"{path}: {key} is int8, but only encoder kernels with a kernel_scale may be")
            expected[key + "_scale"] = jax.ShapeDtypeStruct(kernel[:-2] + kernel[-1:], np.float32)
        if set(got) != set(expected):
            raise ConversionError(
                f"{path}: does not match its config.json "
                f"(missing {sorted(set(expected) - set(got))[:3]}, unexpected {sorted(set(got) - set(expected))[:3]})"
            )
        for key, value in got.items():
            if value.shape != expected[key].shape:
                raise ConversionError(f"{path}: {key} has shape {value.shape}, config.json needs {expected[key].shape}")
        return stacked(self.config, traverse_util.unflatten_dict(got, sep="/"))


def _finite(config, params: dict, where: Path) -> dict:
    """`params`, after refusing a NaN or infinite value (which would make every
    logit NaN), naming the tensor as files name it."""
    for key, value in traverse_util.flatten_dict(per_layer(config, params), sep="/").items():
        if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            raise ConversionError(f"{where}: {key} holds NaN or infinite values")
    return params


def params_digest(config, params: dict) -> str:
    """SHA-256 of parameters (names as files hold them, shapes and float32
    values): what a run records of its teacher, so that a changed teacher is
    seen even under the same path."""
    digest = hashlib.sha256()
    for key, value in sorted(traverse_util.flatten_dict(per_layer(config, params), sep="/").items()):
        value = np.ascontiguousarray(value, np.float32)
        digest.update(f"{key}{value.shape}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def open_checkpoint(path: str | Path) -> Source:
    """A jaxqa checkpoint folder, a Hugging Face folder or a hub id, with its config read."""
    folder = resolve(path)
    hf = _read_hf_config(folder)
    where = folder / "config.json"
    try:
        fam = models.family(hf["model_type"])
        return Source(folder, fam.model_type, fam.config.from_hf(hf))
    except (ValueError, TypeError) as err:
        raise ConversionError(f"{where}: {err}") from None


def save_pretrained(
    folder,
    model_type: str,
    config,
    params,
    tokenizer_from: Path | None,
    overwrite: bool = False,
    source: Path | None = None,
) -> Path:
    """Writes `params` (as the model holds them) as a jaxqa checkpoint folder,
    one layer per name, atomically: a failure leaves nothing at `folder`. A
    `folder` that is, or holds, the `source` folder they were read from is refused.
    Overwriting a checkpoint drops its exports (`exports/`, made from the weights
    replaced), and says so."""
    host = jax.device_get(params)
    precision = precision_of(host)
    # int8 kernels stay int8 (with their scales); everything else, bfloat16 kernels included, is float32.
    flat = traverse_util.flatten_dict(per_layer(config, host if precision == "int8" else dequantized(host)), sep="/")
    tensors = {
        key: np.ascontiguousarray(value, np.int8 if value.dtype == np.int8 else np.float32)
        for key, value in flat.items()
    }
    exports = Path(folder) / EXPORTS_FOLDER  # only an overwritten folder holds any
    had_exports = exports.is_dir()
    with atomic_folder(folder, overwrite, source) as tmp:
        (tmp / "config.json").write_text(json.dumps(config.to_hf(), indent=2) + "\n")
        _write_safetensors(
            tmp / PARAMS_FILE, tensors, {"format": "jaxqa", "model_type": model_type, "precision": precision}
        )
        if tokenizer_from:
            copy_tokenizer(Path(tokenizer_from), tmp)
            if not any((tmp / name).is_file() for name in ("tokenizer.json", "vocab.txt")):
                log.warning(
                    f"{tokenizer_from}: no tokenizer.json or vocab.txt to copy; jaxqa.predict and "
                    f"jaxqa.pipeline need one of them in {folder}"
                )
    if had_exports:
        log.warning(f"{exports}: dropped with the weights it was exported from; export the new ones again")
    return Path(folder)


def _write_safetensors(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    # Written as bytes, so the file gets the user's umask (safetensors' save_file makes it owner-only).
    path.write_bytes(save(tensors, metadata=metadata))


def copy_tokenizer(src: Path, dst: Path) -> None:
    """Copies the tokenizer files that `src` has into the folder `dst`."""
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)


def export_hf(src: str | Path, out: str | Path, overwrite: bool = False, pad: bool = False) -> Path:
    """Writes a jaxqa checkpoint as a Hugging Face folder (`model.safetensors`,
    `config.json`, tokenizer files) that `AutoModelForQuestionAnswering` loads.
    A pruned BERT (heads removed, or feed-forward layers of their own widths) is
    refused unless `pad`: then it is written at full shape with zeros (`compact.padded`)."""
    source = open_checkpoint(src)
    config, params = source.config, source.read_params()  # float32, on the host
    if source.model_type == "bert" and (config.pruned_heads or config.intermediate_sizes):
        if not pad:
            raise ConversionError(
                f"{src}: a pruned BERT (removed heads: pruned_heads; or per-layer feed-forward widths: "
                "intermediate_sizes), which transformers 5 cannot hold; keep the jaxqa folder (jaxqa loads and runs "
                "it), or pass --pad to export it at full shape with zero heads and units (the same logits, without "
                "the speed-up)"
            )
        config, params = compact.padded(config, params)
    with atomic_folder(out, overwrite, source.folder) as tmp:
        state = convert.params_to_hf(source.model_type, config, params)
        _write_safetensors(tmp / "model.safetensors", state, {"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(config.to_hf(), indent=2) + "\n")
        copy_tokenizer(source.folder, tmp)
    return Path(out)


@contextlib.contextmanager
def atomic_folder(folder: str | Path, overwrite: bool = False, source: Path | None = None):
    """Yields a temporary folder that replaces `folder` only if the block succeeds.

    The old folder and the new one trade places in one step, so that `folder`
    is never missing, however the process ends. Temporaries that a killed
    process left beside `folder` are removed first. A `folder` that is, or
    holds, `source` (the folder the new contents are made from) is refused:
    replacing it would lose the source. A folder that cannot be written (a
    read-only or full disk) is an error naming it, and leaves nothing behind."""
    if str(folder) == "":
        raise ConversionError("'': not a folder name; name the folder to write")
    folder = Path(folder)
    refuse_over(folder, source)
    if folder.exists() and not folder.is_dir():
        raise ConversionError(f"{folder} is a file, not a folder; it is left as it is")
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise ConversionError(f"{folder} already exists and is not empty (pass --overwrite to replace it)")
    # mkdir, unlike tempfile.mkdtemp (owner-only), gives the folder the user's umask.
    tmp = folder.parent / f".{folder.name}.{os.getpid()}.{secrets.token_hex(4)}"
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(folder)
        tmp.mkdir()
        yield tmp
        if folder.exists():
            _exchange(tmp, folder)  # tmp now holds the old folder, removed below
        else:
            os.replace(tmp, folder)
    except OSError as err:
        raise ConversionError(f"{folder}: cannot write the folder ({err.strerror or err})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def refuse_over(out: Path, source: Path | None) -> None:
    """Refuses to write the folder `out` when it is `source` or holds it, since
    replacing `out` would lose the source; the error names both."""
    if source is None:
        return
    resolved, src = out.resolve(), Path(source).resolve()
    if resolved == src or resolved in src.parents:
        held = "is" if resolved == src else "holds"
        raise ConversionError(f"{out} {held} the source {source}, which replacing it would lose; write elsewhere")


def _remove_stale_temporaries(folder: Path) -> None:
    """Removes the `.NAME.PID.TOKEN` folders beside `folder` whose process is gone."""
    for stale in folder.parent.glob(f".{folder.name}.*.*"):
        pid = stale.name[len(folder.name) + 2 :].split(".")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


_RENAME_EXCHANGE = 2  # linux/fs.h


def _exchange(a: Path, b: Path) -> None:
    """Swaps two folders in one step (Linux's renameat2); elsewhere by two renames."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except AttributeError:  # a C library without it
        renameat2 = None
    if renameat2 is not None:
        at_cwd = -100  # AT_FDCWD
        if renameat2(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
            return
        if ctypes.get_errno() not in (errno.EINVAL, errno.ENOSYS):  # not a file system that cannot exchange
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()), str(b))
    aside = a.with_name(a.name + ".old")
    os.replace(b, aside)
    os.replace(a, b)
    os.replace(aside, a)


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
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise ConversionError(f"{path}: no such folder, nor a model on the Hugging Face hub ({reason})") from None


def _read_hf_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise ConversionError(f"{folder}: no config.json")
    try:
        hf = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConversionError(f"{path}: not valid JSON ({err})") from None
    if "model_type" not in hf:
        raise ConversionError(f"{path}: no 'model_type' field")
    return hf


def _read_hf_state(folder: Path) -> dict[str, np.ndarray]:
    """The tensors of a Hugging Face folder: model.safetensors (or its sharded index) or pytorch_model.bin."""
    single = folder / "model.safetensors"
    index = folder / "model.safetensors.index.json"
    binary = folder / "pytorch_model.bin"
    if single.is_file():
        return _read_safetensors(single)
    if index.is_file():
        state = {}
        for shard in _shards(index):
            state.update(_read_safetensors(folder / shard))
        return state
    if binary.is_file():
        return _read_torch(binary)
    raise ConversionError(f"{folder}: no weights (model.safetensors or pytorch_model.bin)")


def _shards(index: Path) -> list[str]:
    """The shard files a model.safetensors.index.json names, each checked to exist."""
    try:
        contents = json.loads(index.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConversionError(f"{index}: not valid JSON ({err})") from None
    weight_map = contents.get("weight_map") if isinstance(contents, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(shard, str) for shard in weight_map.values()):
        raise ConversionError(f"{index}: no 'weight_map' of tensor names to shard files")
    shards = sorted(set(weight_map.values()))
    for shard in shards:
        if not (index.parent / shard).is_file():
            raise ConversionError(f"{index}: names the shard {shard!r}, which is not in {index.parent}")
    return shards


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    try:
        with safe_open(str(path), framework="numpy") as f:
            return {key: f.get_tensor(key) for key in f.keys()}
    except Exception as err:  # the library raises several types for corrupt files
        raise ConversionError(f"{path}: cannot read safetensors file ({err})") from None


def _read_torch(path: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise ConversionError(f"{path}: reading pytorch_model.bin needs torch (pip install 'jaxqa[torch]')") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's message runs to a page of advice to load it unsafely
        raise ConversionError(
            f"{path}: holds Python objects besides tensors, which could run code when loaded; it was not loaded"
        ) from None
    except Exception as err:  # truncated zip, ...
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise ConversionError(f"{path}: cannot read PyTorch weights ({reason})") from None
    if not isinstance(state, dict):
        raise ConversionError(f"{path}: holds a {type(state).__name__}, not a state dict (tensor name -> tensor)")
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ConversionError(
                f"{path}: {key!r} is not a tensor (it is {type(value).__name__}); "
                "a state dict maps tensor names to tensors"
            )
    # Floating-point tensors as float32; others keep their type, which conversion refuses for a weight.
    return {key: value.float().numpy() if value.is_floating_point() else value.numpy() for key, value in state.items()}
