"""Hugging Face PyTorch weights <-> jaxqa parameters, with no file in sight
(`jaxqa.checkpoint` reads and writes the files).

Conversion is a pure function of a name -> numpy array mapping. The family's
name table (`Family.hf`) gives the Hugging Face module of each jaxqa module; leaves
follow one rule (`LEAF_NAMES`) and need only two reshapes: a Linear weight
(out, in) is a transposed kernel (in, out), and a kernel-size-1 Conv1d weight
(out, in/G, 1) is a grouped kernel (G, in/G, out/G). It fails loudly: every
jaxqa weight must be filled with the right shape from a floating-point tensor
(float16 and bfloat16 are read as float32; an integer one is refused), and
every source tensor used or dropped by name.

Source names are first read as `transformers` reads them (`LEGACY_RENAMES`).
"""

import dataclasses
import difflib
import re
from collections.abc import Mapping

import numpy as np
from flax import traverse_util
from jax import numpy as jnp

from jaxqa import models
from jaxqa.errors import Error
from jaxqa.models.encoder import file_shapes, per_layer, stacked

LEAF_NAMES = {"kernel": "weight", "scale": "weight", "embedding": "weight", "weight": "weight", "bias": "bias"}
HEAD = "qa_outputs"  # module path and Hugging Face name of the span head, outside the encoder prefix

# The renames `transformers` 5.2 applies to every checkpoint it loads
# (conversion_mapping.py, the "legacy" mapping; no per-family mapping exists for
# these families), as regular expressions searched for anywhere in a name. Its
# `save_pretrained` writes them back, so a model it loaded is saved with
# `LayerNorm.gamma`/`LayerNorm.beta`. The mapping's other two renames
# (`.weight_g$`, `.weight_v$` to weight-norm parametrizations) name no tensor of
# these families.
LEGACY_RENAMES = (("LayerNorm.gamma", "LayerNorm.weight"), ("LayerNorm.beta", "LayerNorm.bias"))


class ConversionError(Error):
    """A checkpoint that cannot be converted; the message names the tensor or file."""


@dataclasses.dataclass
class Report:
    dropped: list[str]  # source tensors deliberately left out (pooler, pre-training heads)
    fresh_head: bool  # the source had no span head; a freshly initialised one was used


def is_floating(value: np.ndarray) -> bool:
    """Whether `value` holds floating-point numbers (bfloat16 included, which NumPy alone does not count)."""
    return bool(jnp.issubdtype(value.dtype, jnp.floating))


def _to_jax(source: np.ndarray, target_shape: tuple[int, ...], leaf: str) -> np.ndarray:
    if leaf == "kernel" and len(target_shape) == 2:
        return source.T
    if leaf == "kernel" and len(target_shape) == 3:
        groups = target_shape[0]
        if source.ndim != 3 or source.shape[-1] != 1:
            return source  # wrong shape: reported by the caller
        out, in_per_group, _ = source.shape
        return source.reshape(groups, out // groups, in_per_group).transpose(0, 2, 1)
    return source


def _to_hf(value: np.ndarray, leaf: str) -> np.ndarray:
    if leaf == "kernel" and value.ndim == 2:
        return value.T
    if leaf == "kernel" and value.ndim == 3:
        groups, in_per_group, out_per_group = value.shape
        return value.transpose(0, 2, 1).reshape(groups * out_per_group, in_per_group, 1)
    return value


def _legacy_renamed(name: str) -> str:
    # As transformers does it: the first match, then every copy of the matched text.
    for pattern, replacement in LEGACY_RENAMES:
        match = re.search(pattern, name)
        if match:
            name = name.replace(match.group(0), replacement)
    return name


def _missing_message(missing: list[str], unused: set[str], original: Mapping[str, str]) -> str:
    """Names up to five missing tensors, each with the unused source tensors closest to it."""
    parts = []
    for name in missing[:5]:
        close = difflib.get_close_matches(name, sorted(unused), n=2)
        parts.append(
            f"{name!r}" + (f" (closest unused: {', '.join(repr(original[n]) for n in close)})" if close else "")
        )
    return f"missing tensor(s) {', '.join(parts)}{' ...' if len(missing) > 5 else ''}"


def _leaves(config) -> dict[tuple[str, str], tuple[int, ...]]:
    """(module path, leaf name) -> shape of every parameter of the model of `config`, one layer per name."""
    return {(path.rpartition("/")[0], path.rpartition("/")[2]): s.shape for path, s in file_shapes(config).items()}


def _hf_name(fam: models.Family, module: str, leaf: str) -> str:
    """The Hugging Face tensor of a jaxqa parameter."""
    name = HEAD if module == HEAD else fam.hf.prefix + fam.hf.module(module)
    return f"{name}.{LEAF_NAMES[leaf]}"


def _read_names(fam: models.Family, state: Mapping[str, np.ndarray]) -> dict[str, str]:
    """The name jaxqa reads each tensor of `state` by -> the tensor's own name."""
    original: dict[str, str] = {}
    for key in state:
        name = _legacy_renamed(key)
        # A bare encoder (e.g. `BertModel`) is saved without the prefix.
        name = name if name.startswith((fam.hf.prefix, HEAD + ".")) else fam.hf.prefix + name
        if name in original:
            raise ConversionError(f"tensors {original[name]!r} and {key!r} both stand for {name!r}")
        original[name] = key
    return original


def params_from_hf(model_type: str, config, state: Mapping[str, np.ndarray]) -> tuple[dict, Report]:
    """Converts a Hugging Face state dict (any prefix layout) to jaxqa parameters.

    Returns float32 numpy parameters as the model holds them (`encoder.stacked`;
    without `qa_outputs` when the source has no span head) and a report of what
    was dropped.
    """
    fam = models.family(model_type)
    original = _read_names(fam, state)
    state = {name: state[source] for name, source in original.items()}
    unused = set(state)
    flat, missing = {}, []
    for (module, leaf), shape in _leaves(config).items():
        name = _hf_name(fam, module, leaf)
        if name not in state:
            missing.append(name)
            continue
        unused.discard(name)
        if not is_floating(state[name]):
            raise ConversionError(
                f"tensor {original[name]!r} is {state[name].dtype}: a weight must be floating point "
                "(float32, float16 or bfloat16)"
            )
        value = _to_jax(np.asarray(state[name], np.float32), shape, leaf)
        if value.shape != shape:
            needed = _to_hf(np.broadcast_to(np.float32(0), shape), leaf).shape  # as the source lays it out
            raise ConversionError(
                f"tensor {original[name]!r} has shape {tuple(np.shape(state[name]))}, but this config needs {needed}"
            )
        flat[(*module.split("/"), leaf)] = value
    head_missing = sorted(n for n in missing if n.startswith(HEAD + "."))
    if len(head_missing) not in (0, 2):
        raise ConversionError(f"the span head is incomplete: missing {head_missing}")
    encoder_missing = [n for n in missing if not n.startswith(HEAD + ".")]
    if encoder_missing:
        raise ConversionError(_missing_message(encoder_missing, unused, original))
    # What the family computes (`hf_fixed`) must be what the checkpoint stores.
    for name, table in fam.hf_fixed(config).items():
        if name in state:
            unused.discard(name)
            if np.shape(state[name]) != table.shape:
                raise ConversionError(
                    f"tensor {original[name]!r} has shape {tuple(np.shape(state[name]))}, but the fixed table "
                    f"this config computes has {table.shape}"
                )
            if not np.allclose(state[name], table, rtol=0, atol=1e-6):
                raise ConversionError(f"tensor {original[name]!r} is not the fixed table this config computes")
    # What the family exports as `hf_export_extras` is built by the reference but unused here.
    extras = set(fam.hf_export_extras(config))
    known = {n for n in unused if n in extras or n[len(fam.hf.prefix) :].startswith(fam.hf.dropped)}
    dropped = sorted(original[n] for n in known)
    leftover = sorted(original[n] for n in unused - known)
    if leftover:
        raise ConversionError(
            f"unexpected tensor(s) jaxqa does not use: {leftover[:5]}{' ...' if len(leftover) > 5 else ''}"
        )
    params = stacked(config, traverse_util.unflatten_dict(flat))
    return params, Report(dropped=dropped, fresh_head=bool(head_missing))


def params_to_hf(model_type: str, config, params) -> dict[str, np.ndarray]:
    """jaxqa parameters -> the state dict of the Hugging Face QA class."""
    fam = models.family(model_type)
    state = {}
    for path, value in traverse_util.flatten_dict(per_layer(config, params)).items():
        module, leaf = "/".join(path[:-1]), path[-1]
        state[_hf_name(fam, module, leaf)] = np.ascontiguousarray(_to_hf(np.asarray(value, np.float32), leaf))
    state.update(fam.hf_export_extras(config))
    state.update(fam.hf_fixed(config))
    return state
