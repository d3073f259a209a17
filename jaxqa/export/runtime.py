"""An ONNX export folder (`jaxqa.export.write`) as a model that jaxqa serves.

`Exported` answers to what `jaxqa.pipeline`, `jaxqa.predict` and
`jaxqa.evaluate` ask of a loaded model: `forward(params, input_ids,
attention_mask, token_type_ids)` -> start, end logits (B, T) as numpy,
`precision`, `config` and `tokenizer`. ONNX Runtime runs it on the CPU.
"""

import functools
import json
from pathlib import Path

import numpy as np

from jaxqa.checkpoint import Source
from jaxqa.errors import Error
from jaxqa.export.write import INPUTS, MODEL_FILE, RECORD_FILE
from jaxqa.squad.tokenizer import load_tokenizer


def is_export(folder: Path) -> bool:
    return (folder / RECORD_FILE).is_file()


class _Session:
    """ONNX Runtime's session of a model file, called as a jaxqa forward is
    (its `params` unused: the weights are in the file). It compiles no
    programs, so `traces` stays 0."""

    traces = 0

    def __init__(self, path: Path):
        try:
            import onnxruntime
        except ImportError:
            raise Error(f'{path}: serving an ONNX export needs onnxruntime: pip install "jaxqa[onnx]"') from None
        try:
            self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own types for unreadable or invalid files
            raise Error(f"{path}: ONNX Runtime cannot load it ({str(err).splitlines()[0]})") from None

    def __call__(self, params, input_ids, attention_mask, token_type_ids) -> tuple[np.ndarray, np.ndarray]:
        feeds = {
            name: np.asarray(array, np.int32)
            for name, array in zip(INPUTS, (input_ids, attention_mask, token_type_ids))
        }
        start, end = self.session.run(None, feeds)
        return start, end


class Exported:
    """An export folder opened to run: `source` is its `open_checkpoint`, whose
    config.json it keeps; `precision` "auto" or the export's own."""

    run_params = None  # the weights are inside the model file

    def __init__(self, source: Source, precision: str = "auto"):
        self.folder: Path = source.folder
        self.model_type = source.model_type
        self.config = source.config
        record_path = self.folder / RECORD_FILE
        try:
            record = json.loads(record_path.read_text())
            self.precision: str = record["precision"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise Error(f"{record_path}: not an export record jaxqa wrote ({err})") from None
        self._check(precision)
        self.forward = _Session(self.folder / MODEL_FILE)

    def _check(self, precision: str) -> None:
        if precision not in ("auto", self.precision):
            raise Error(
                f"precision {precision}: {self.folder} is an ONNX export in {self.precision}, which runs in that "
                "precision only (ask for it, or auto)"
            )

    def with_precision(self, precision: str) -> "Exported":
        """This model, if `precision` is its own or "auto"; an export holds one precision."""
        self._check(precision)
        return self

    @functools.cached_property
    def tokenizer(self):
        return load_tokenizer(self.folder, self.config.vocab_size)

    def __call__(self, input_ids, attention_mask, token_type_ids):
        return self.forward(None, input_ids, attention_mask, token_type_ids)
