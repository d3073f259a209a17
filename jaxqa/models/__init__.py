"""The encoder families: what differs between them is data and a few modules,
and `jaxqa.models.encoder.SpanModel` runs any of them: embeddings, the layer
stack, the span head.

Each family is a module, `jaxqa.models.<model_type>`, that exports the same
names, which `family` reads into a `Family` (no registry): `MODEL_TYPE` and
`ARCHITECTURE` (its Hugging Face model_type and question-answering class),
`Config` and `SIZES`, the modules `Embeddings` and `Layer`, `HF` (its Hugging
Face names, `HFNames`), `forward_flops` and `ATTENTION_DROPOUT`; and, where the
family has them, `HEAD_DROPOUT`, `LAYER_BLOCKS`, `hf_export_extras` and
`hf_fixed` (see `Family`).
"""

import dataclasses
import functools
import importlib
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxqa.errors import Error
from jaxqa.models.stacking import Repeated

if TYPE_CHECKING:  # encoder imports this module
    from jaxqa.models.encoder import SpanModel

MODEL_TYPES = ("bert", "squeezebert", "mobilebert", "distilbert")


class ConfigError(Error):
    """A model config that jaxqa cannot honour; the message names the field."""


class ModelConfig(Protocol):
    """What every family's Config is: a frozen dataclass with Hugging Face field
    names, read from and written to a `config.json` dict."""

    @property
    def vocab_size(self) -> int: ...

    @property
    def max_position_embeddings(self) -> int: ...

    @classmethod
    def from_hf(cls, hf: dict[str, Any]) -> Any: ...

    def to_hf(self) -> dict[str, Any]: ...


@dataclasses.dataclass(frozen=True)
class HFNames:
    """Where a Hugging Face checkpoint keeps each jaxqa module. Leaves follow one
    rule (`jaxqa.models.convert.LEAF_NAMES`)."""

    prefix: str  # of the encoder's tensors, e.g. "bert."; the span head is top-level
    dropped: tuple[str, ...]  # tensors (after the prefix) a span model does not use: pooler, pre-training heads
    layer: str  # Hugging Face module of layer {i}, e.g. "encoder.layer.{i}"
    layer_modules: Mapping[str, str]  # module of a jaxqa layer -> module under `layer`; {j} numbers a repeated block

    def module(self, path: str) -> str:
        """The Hugging Face module (without the prefix) of a jaxqa module path
        ("layer_3/query" -> "encoder.layer.3.attention.self.query"); the
        embeddings' modules have the same names in every family."""
        scope, _, name = path.partition("/")
        if scope == "embeddings":
            return f"embeddings.{name}"
        layer = re.fullmatch(r"layer_(\d+)", scope)
        if layer:
            for ours, theirs in self.layer_modules.items():
                block = re.fullmatch(re.escape(ours).replace(re.escape("{j}"), r"(?P<j>\d+)"), name)
                if block:
                    return f"{self.layer.format(i=layer[1])}.{theirs.format(**block.groupdict())}"
        raise KeyError(path)


def _no_tensors(config) -> dict[str, np.ndarray]:
    return {}


@dataclasses.dataclass(frozen=True, eq=False)
class Family:
    """What one encoder family is, for `SpanModel`, conversion and the benchmarks.

    `embeddings(config, dtype, param_dtype, execution)` is a module (input_ids,
    token_type_ids, deterministic) -> (B, T, D); `layer(config, dtype,
    param_dtype, execution, index)` a module (x, attention_mask, deterministic)
    -> x, (B, T, D) each (both are `layers.Part`s). A layer's computation depends on its index only through its
    parameters' shapes, so that layers of equal shapes can run as one scanned
    body (`jaxqa.models.stacking`).
    """

    model_type: str  # the Hugging Face model_type
    architecture: str  # the Hugging Face question-answering class
    config: type[ModelConfig]
    sizes: Mapping[str, Any]  # named configs, at least "base" and "tiny"
    embeddings: type[nn.Module]
    layer: type[nn.Module]
    hf: HFNames
    # Matrix-multiply FLOPs of one forward pass over one sequence of S tokens
    # (the numerator of model FLOPs utilisation). Every Linear (and grouped
    # convolution, at 1/groups of the dense cost) counts 2 x inputs x outputs per
    # token, attention 4 x S x all-head width per token; lookups, norms,
    # activations and softmax are not counted. A training step is 3 times this.
    forward_flops: Callable[[Any, int], int]
    attention_dropout: str  # the config field of attention's dropout rate
    head_dropout: str | None = None  # the config field of dropout before the span head, where there is one
    layer_blocks: tuple[Repeated, ...] = ()  # blocks a layer repeats, stacked inside it
    # Tensors the Hugging Face class has and jaxqa does not (built as the reference
    # builds them, for export), and tensors it stores that jaxqa computes.
    hf_export_extras: Callable[[Any], dict[str, np.ndarray]] = _no_tensors
    hf_fixed: Callable[[Any], dict[str, np.ndarray]] = _no_tensors


# Each field of a `Family` and the name a family's module gives it; the last
# four are the optional ones (the family has them, or `Family`'s default holds).
MODULE_NAMES = {
    "model_type": "MODEL_TYPE",
    "architecture": "ARCHITECTURE",
    "config": "Config",
    "sizes": "SIZES",
    "embeddings": "Embeddings",
    "layer": "Layer",
    "hf": "HF",
    "forward_flops": "forward_flops",
    "attention_dropout": "ATTENTION_DROPOUT",
    "head_dropout": "HEAD_DROPOUT",
    "layer_blocks": "LAYER_BLOCKS",
    "hf_export_extras": "hf_export_extras",
    "hf_fixed": "hf_fixed",
}


@functools.cache
def family(model_type: str) -> Family:
    """The family of `model_type`, read from its module's names."""
    if model_type not in MODEL_TYPES:
        raise ConfigError(f"model_type {model_type!r} is not supported; jaxqa has {', '.join(MODEL_TYPES)}")
    names = vars(importlib.import_module(f"jaxqa.models.{model_type}"))
    return Family(**{field: names[name] for field, name in MODULE_NAMES.items() if name in names})


def family_of(config) -> Family:
    """The family whose Config `config` is."""
    for model_type in MODEL_TYPES:
        if isinstance(config, family(model_type).config):
            return family(model_type)
    raise ConfigError(f"{type(config).__name__} is the config of no jaxqa family")


def example_batch():
    """A batch of one 8-token window (ids, mask, token types), enough to initialise a model."""
    ids = jnp.zeros((1, 8), jnp.int32)
    return ids, jnp.ones_like(ids), ids


def init_params(model: nn.Module, rng: jax.Array):
    """Freshly initialised parameters, boxed with their logical axis names."""
    return jax.jit(model.init)(rng, *example_batch())["params"]


def abstract_params(model: nn.Module):
    """Shapes, dtypes and logical axis names of the parameters, allocating nothing."""
    return jax.eval_shape(functools.partial(init_params, model), jax.random.key(0))


class Forward:
    """A span model's forward pass at inference, compiled: `(layers, input_ids,
    attention_mask, token_type_ids)`, each batch array (B, T), -> start, end
    logits (B, T) float32, where `layers` are its parameters as `held(params)`
    makes them: one tree per layer, and per block a layer repeats, as files
    hold them, rather than the stacked runs that training scans.

    It runs layer by layer: the embeddings, each layer and the span head are
    programs of their own, a layer's compiled once for its run of like layers
    (as a scan's body is) and called for each of them over that layer's own
    weights, which its products read where they are. A scanned program has
    XLA:CPU copy each layer's slice of a stacked kernel before its products
    read it (28 MB per layer of BERT-base, the layer's every weight), and an
    unrolled one compiles every layer anew (benchmarks/cpu/layer_copy.py).
    The logits are the scanned program's (to rounding where bfloat16 products
    sum in another order).

    `out_sharding` lays the logits out on a mesh (replicated, so that every
    process can read them); `traces` counts the input shapes compiled for.
    """

    def __init__(self, module: "SpanModel", out_sharding=None):
        # A layer's repeated blocks (MobileBERT's) are few: read one by one, in place too.
        self.module = module.clone(execution=dataclasses.replace(module.execution, scan=False))
        self.traces = 0
        self._template: tuple[int, ...] = ()  # layer i runs as the first layer of its run
        self._embedded = jax.jit(self._traced_embeddings)
        self._layer = jax.jit(self.module.layer_output, static_argnums=0)
        self._span = jax.jit(self.module.span_output, out_shardings=out_sharding)

    def held(self, params) -> dict:
        """Parameters as the model holds them (stacked runs), as this forward takes them."""
        self._template = tuple(first for first, length in self.module.layer_runs(params) for _ in range(length))
        return self.module.per_layer(params)

    def model_params(self, layers) -> dict:
        """The inverse of `held`: the parameters as the model holds them."""
        return self.module.stacked(layers)

    def _traced_embeddings(self, embeddings, input_ids, token_type_ids):
        # Python runs this body only when jax traces a new input shape.
        self.traces += 1
        return self.module.embedded(embeddings, input_ids, token_type_ids)

    def encode(self, layers, input_ids, attention_mask, token_type_ids):
        """The last hidden states, (B, T, D)."""
        if len(self._template) != self.module.config.num_hidden_layers:
            raise ValueError("the layers are to be held as `held(params)` makes them")
        x = self._embedded(layers["embeddings"], input_ids, token_type_ids)
        for i, first in enumerate(self._template):
            x = self._layer(first, layers[f"layer_{i}"], x, attention_mask)
        return x

    def __call__(self, layers, input_ids, attention_mask, token_type_ids):
        return self._span(layers["qa_outputs"], self.encode(layers, input_ids, attention_mask, token_type_ids))

    def lowered(self, layers, input_ids, attention_mask, token_type_ids) -> list:
        """The programs that a batch of this shape runs, lowered (their HLO and
        memory to read): the embeddings, a layer of each run, the span head."""
        x = jax.eval_shape(self.module.embedded, layers["embeddings"], input_ids, token_type_ids)
        runs = sorted(set(self._template))
        return [
            self._embedded.lower(layers["embeddings"], input_ids, token_type_ids),
            *(self._layer.lower(first, layers[f"layer_{first}"], x, attention_mask) for first in runs),
            self._span.lower(layers["qa_outputs"], x),
        ]


class _Forwards:
    """`forward(module, out_sharding=None)`: the shared `Forward` of a module (and
    output layout), so that every caller of the same model (a loaded checkpoint,
    its pipeline, evaluations during training) compiles each shape once per
    process. `cache_clear()` forgets them all."""

    def __init__(self):
        self._made: dict[tuple, Forward] = {}

    def __call__(self, module: "SpanModel", out_sharding=None) -> Forward:
        key = (module, out_sharding)
        if key not in self._made:
            self._made[key] = Forward(module, out_sharding)
        return self._made[key]

    def cache_clear(self) -> None:
        self._made.clear()


forward = _Forwards()


def check_length(config, length: int, what: str) -> None:
    """Refuses windows of `length` tokens that the model's position table cannot
    hold (past `max_position_embeddings` every logit would be NaN); `what` names
    the flag or argument that asked for them."""
    if length > config.max_position_embeddings:
        raise ConfigError(
            f"{what} {length}: the model has positions for at most "
            f"{config.max_position_embeddings} tokens (max_position_embeddings)"
        )
