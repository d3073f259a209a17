"""Inference precision: the encoder's matrix products in float32, bfloat16 or
int8, and `auto`, the fastest of them that the machine runs well.

A precision is a property of the parameters (`jaxqa.models.layers.matmul`
chooses by the kernel's dtype), so one model definition serves each (each
compiles to its own programs). `prepare`
turns every encoder kernel into

- `bf16`: bfloat16; activations are cast to bfloat16 at each product, which
  accumulates and returns float32;
- `int8`: int8 with a float32 `kernel_scale` per output channel (symmetric,
  max |w| -> 127); activations are quantized per token at each product, which
  accumulates in int32.

Embeddings, biases, norms, softmax, attention and the span head stay float32 in
every mode: they hold little of the work and most of the sensitivity.
"""

import argparse
import functools
import logging
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxqa.errors import Error
from jaxqa.models.convert import HEAD

MODES = ("auto", "fp32", "bf16", "int8")

log = logging.getLogger("jaxqa.precision")

# `auto` is the fastest mode that keeps at least 97% of float32's answers:
# - never int8, which keeps fewer of them on the fine-tuned MiniLM, with AMX or
#   without (so AVX-512 VNNI, which speeds up int8 alone, counts for nothing);
# - bfloat16 on CPUs with bfloat16 units, AMX or AVX-512 BF16 (their Linux
#   /proc/cpuinfo names below), where it keeps the answers and runs faster
#   than float32 (AVX-512 BF16 without AMX, as on AMD Zen 4, on a measurement
#   that is not among the records);
# - float32 on CPUs with AVX2 alone, where XLA's bfloat16 products run slower
#   than float32's.
# The figures are in docs/results.md ("Precision"; "Speed against PyTorch on a
# CPU"), from benchmarks/results/precision_eval_cpu.json,
# precision_eval_avx2_cpu.json, latency_export_cpu.json and matmul_cpu.json.
BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.cache
def _cpuinfo(*keys: str) -> str:
    """The value of the first line of /proc/cpuinfo named one of `keys` ("" where none is)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith(keys)), "")


def cpu_flags() -> frozenset[str]:
    """This machine's CPU feature flags (empty where /proc/cpuinfo says nothing)."""
    return frozenset(_cpuinfo("flags", "Features").split())


def cpu_name() -> str:
    """The processor's model name, e.g. 'AMD EPYC 9B14' ("" where /proc/cpuinfo says nothing)."""
    return _cpuinfo("model name")


def choose(backend: str, flags: frozenset[str]) -> tuple[str, str]:
    """The fastest inference mode for `backend` ("cpu", "gpu", "tpu") with these
    CPU `flags` that keeps float32's answers, and why, in a few words."""
    if backend != "cpu":
        return "bf16", f"{backend}: bfloat16 matrix units"
    units = [flag for flag in BF16_FLAGS if flag in flags]
    if units:
        return "bf16", f"CPU with bfloat16 units ({', '.join(units)})"
    return "fp32", "CPU without bfloat16 units, where bfloat16 runs no faster than float32"


def training_bf16(backend: str, flags: frozenset[str]) -> bool:
    """Whether `--precision auto` trains in bfloat16: on accelerators, and on CPUs
    whose AMX units run bfloat16 products (with float32 results) several times
    faster than float32 ones."""
    return backend != "cpu" or "amx_bf16" in flags


def add_flag(parser: argparse.ArgumentParser) -> None:
    """An inference command's --precision."""
    parser.add_argument(
        "--precision",
        default="auto",
        choices=MODES,
        help="of the matrix products; auto: the fastest this machine runs well (said on stderr)",
    )


def _reasoned(mode: str, what: str) -> tuple[str, str]:
    """`mode` itself ("asked"), or for `auto` this machine's choice, and why;
    `what` names the argument or flag that asked."""
    if mode not in MODES:
        raise Error(f"{what} {mode!r}: choose one of {', '.join(MODES)}")
    if mode != "auto":
        return mode, "asked"
    return choose(jax.default_backend(), cpu_flags())


def pick(mode: str, what: str = "precision") -> str:
    """`mode` itself, or for `auto` this machine's choice, logged in one line;
    `what` names the argument or flag that asked."""
    chosen, why = _reasoned(mode, what)
    if mode == "auto":
        log.info(f"precision auto: {chosen} ({why})")
    return chosen


def decide(params: dict, mode: str) -> tuple[str, str]:
    """The mode that a model of `params` runs for `mode`, and why, in a few words:
    "asked" for a mode asked by name; for `auto`, int8 weights (an int8
    checkpoint's) in int8, as they were saved to run, else this machine's choice."""
    if mode == "auto" and precision_of(params) == "int8":
        return "int8", "the weights are int8"
    return _reasoned(mode, "precision")


def pick_for(params: dict, mode: str) -> str:
    """`decide(params, mode)`'s mode; that of `auto` logged in one line."""
    chosen, why = decide(params, mode)
    if mode == "auto":
        log.info(f"precision auto: {chosen} ({why})")
    return chosen


def is_quantized(path: str) -> bool:
    """Whether the parameter at `path` ("layer_0/query/kernel") is a kernel the modes change."""
    return path.endswith("/kernel") and not path.startswith(HEAD + "/")


def quantize(kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 kernel and float32 scale per output channel: the kernel's input axis,
    its second last, is reduced ((I, O) -> (O,), (G, I, O) -> (G, O))."""
    kernel = np.asarray(kernel, np.float32)
    scale = np.abs(kernel).max(axis=-2, initial=0.0) / 127  # 0 where a pruned layer's kernel has no input
    safe = np.where(scale > 0, scale, 1)
    return np.round(kernel / np.expand_dims(safe, -2)).astype(np.int8), scale.astype(np.float32)


def dequantize(kernel: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return np.asarray(kernel, np.float32) * np.expand_dims(np.asarray(scale, np.float32), -2)


def precision_of(params: dict) -> str:
    """ "int8" for parameters with int8 kernels, else "fp32" (bfloat16 kernels are a cast of float32 ones)."""
    flat = traverse_util.flatten_dict(params, sep="/")
    return "int8" if any(np.dtype(value.dtype) == np.int8 for value in flat.values()) else "fp32"


def dequantized(params: dict) -> dict:
    """float32 numpy parameters: int8 kernels times their scales (the int8
    model's weights), the scales dropped; float ones as they are."""
    flat = traverse_util.flatten_dict(jax.device_get(params), sep="/")
    out = {}
    for path, value in flat.items():
        if path.endswith("/kernel_scale"):
            continue
        if np.dtype(value.dtype) == np.int8:
            value = dequantize(value, flat[path + "_scale"])
        out[path] = np.asarray(value, np.float32)
    return traverse_util.unflatten_dict(out, sep="/")


def prepare(params: dict, mode: str) -> dict:
    """`params` (float32, or int8 as `prepare(..., "int8")` made them) with their
    encoder kernels in `mode` ("fp32", "bf16" or "int8"), as jax arrays. int8
    kernels asked for in another mode are dequantized: the int8 model's weights."""
    if mode == "int8" and precision_of(params) == "int8":
        return jax.tree_util.tree_map(jnp.asarray, params)
    flat = traverse_util.flatten_dict(dequantized(params), sep="/")
    for path in [path for path in flat if is_quantized(path)]:
        if mode == "int8":
            flat[path], flat[path + "_scale"] = quantize(flat[path])
        elif mode == "bf16":
            flat[path] = flat[path].astype(jnp.bfloat16)
    return traverse_util.unflatten_dict({path: jnp.asarray(value) for path, value in flat.items()}, sep="/")
