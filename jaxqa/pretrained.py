"""A model ready to run: a checkpoint's weights in a precision, its tokenizer,
and its compiled forward pass (`load_pretrained`)."""

import functools
from pathlib import Path

from jaxqa import models
from jaxqa.checkpoint import Source, open_checkpoint, save_pretrained
from jaxqa.engine import Compiled
from jaxqa.errors import Error
from jaxqa.export.runtime import Exported, is_export
from jaxqa.models.encoder import SpanModel
from jaxqa.precision import pick_for, prepare
from jaxqa.squad.tokenizer import load_tokenizer


class Pretrained:
    """A model ready to run: `model(input_ids, attention_mask, token_type_ids)` gives
    `(start_logits, end_logits)`, each (B, T) float32. `precision` ("fp32",
    "bf16", "int8" or "auto", see `jaxqa.precision`) is that of its matrix products
    (`auto` on int8 weights: int8). `max_length` is the longest window it takes,
    in tokens.

    `params` are its weights, runs of like layers stacked as the model holds
    them, in its precision, made when asked from those that its `runtime`
    holds (one layer per name, `jaxqa.engine.Compiled`), so that memory holds
    the weights once; the runtime runs them with the process's one compiled
    forward of its module (`models.forward`), which the pipeline and
    evaluation share.
    """

    def __init__(self, model_type: str, config, params, folder: Path, precision: str = "fp32"):
        self.model_type = model_type
        self.config = config
        self.folder = folder
        self.precision = pick_for(params, precision)
        self.max_length: int = config.max_position_embeddings
        self.module = SpanModel(config)
        self.runtime = Compiled(self.module, prepare(params, self.precision))

    @classmethod
    def from_source(cls, source: Source, precision: str = "fp32") -> "Pretrained":
        """The model of an opened checkpoint folder, its weights read as stored (an int8 checkpoint's int8)."""
        if is_export(source.folder):
            raise Error(
                f"{source.folder}: an export (ONNX or LiteRT), which its own runtime runs; open it with jaxqa.open_model"
            )
        return cls(source.model_type, source.config, source.read_params(as_stored=True), source.folder, precision)

    def with_precision(self, precision: str) -> "Pretrained":
        """The same model with its matrix products in `precision` (itself if they already are)."""
        mode = pick_for(self.params, precision)
        return (
            self if mode == self.precision else Pretrained(self.model_type, self.config, self.params, self.folder, mode)
        )

    @functools.cached_property
    def tokenizer(self):
        return load_tokenizer(self.folder, self.config.vocab_size)

    @property
    def params(self) -> dict:
        return self.runtime.model_params

    @property
    def forward(self) -> models.Forward:
        return self.runtime.forward

    def __call__(self, input_ids, attention_mask, token_type_ids):
        return self.runtime(input_ids, attention_mask, token_type_ids)

    def encode(self, input_ids, attention_mask, token_type_ids):
        """The encoder's last hidden states, (B, T, D)."""
        return self.runtime.forward.encode(self.runtime.params, input_ids, attention_mask, token_type_ids)

    def save(self, folder: str | Path, overwrite: bool = False) -> Path:
        """Writes the model as it runs: an int8 model as an int8 checkpoint, which
        loads without quantizing again; a bfloat16 one as float32."""
        return save_pretrained(folder, self.model_type, self.config, self.params, self.folder, overwrite)


def open_model(checkpoint: str | Path | Source, precision: str = "fp32") -> "Pretrained | Exported":
    """The model of a folder (or of an opened one): an export (`jaxqa.export`)
    runs under ONNX Runtime (ONNX) or the LiteRT interpreter (LiteRT) in its own
    precision ("auto" or that one); any other checkpoint is a `Pretrained` in
    `precision`."""
    source = checkpoint if isinstance(checkpoint, Source) else open_checkpoint(checkpoint)
    if is_export(source.folder):
        return Exported(source, precision)
    return Pretrained.from_source(source, precision)


def load_pretrained(path: str | Path, precision: str = "fp32") -> Pretrained:
    """A jaxqa checkpoint folder, a Hugging Face folder (converted on the fly) or
    hub id, with its matrix products in `precision` (see `jaxqa.precision`).
    (An ONNX or LiteRT export folder opens with `open_model`, as the pipeline does.)"""
    return Pretrained.from_source(open_checkpoint(path), precision)
