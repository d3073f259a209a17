"""An export folder (`jaxqa.export.format`) as a model that jaxqa serves.

`Exported` answers to what `jaxqa.pipeline`, `jaxqa.predict` and
`jaxqa.evaluate` ask of a loaded model: its `runtime` (a `jaxqa.engine.Runtime`),
`precision`, `config` and `tokenizer`. ONNX Runtime runs an ONNX export and
the LiteRT interpreter a LiteRT one, on the CPU. Nothing here imports the
writer's code.
"""

import functools
import json
import os
from pathlib import Path

import numpy as np

from jaxqa.checkpoint import Source
from jaxqa.errors import Error
from jaxqa.export.format import EXPORT_NAMES, MODEL_FILES, RECORD_FILE, signature
from jaxqa.squad.tokenizer import load_tokenizer


def is_export(folder: Path) -> bool:
    return (folder / RECORD_FILE).is_file()


class OnnxRuntime:
    """ONNX Runtime's session of a model file, as a `jaxqa.engine.Runtime`. It
    compiles no programs, so `traces` stays 0. Its threads sleep between runs
    instead of spinning: the pipeline featurizes and decodes between runs, and
    on a machine of few cores spinning threads take the cores that work needs."""

    name, traces = "onnx", 0

    def __init__(self, path: Path, record: dict):
        try:
            import onnxruntime
        except ImportError:
            raise Error(f'{path}: serving an ONNX export needs onnxruntime: pip install "jaxqa[onnx]"') from None
        options = onnxruntime.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own types for unreadable or invalid files
            raise Error(f"{path}: ONNX Runtime cannot load it ({str(err).splitlines()[0]})") from None
        self.inputs, self.outputs = record["inputs"], record["outputs"]

    def __call__(self, input_ids, attention_mask, token_type_ids) -> tuple[np.ndarray, np.ndarray]:
        feeds = {
            name: np.asarray(array, np.int32)
            for name, array in zip(self.inputs, (input_ids, attention_mask, token_type_ids))
        }
        start, end = self.session.run(self.outputs, feeds)
        return start, end


def _cores() -> int:
    """The cores this process may run on (all of the machine's where the OS does not say)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class LiteRTRuntime:
    """The LiteRT interpreter of a model file whose signatures `length_{L}` take
    windows (1, L), as a `jaxqa.engine.Runtime`: each window of a batch (B, T)
    runs on its own in the shortest L >= T, padded with masked positions, which
    change no logit of the window's own tokens."""

    name, traces = "litert", 0

    def __init__(self, path: Path, record: dict):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise Error(f'{path}: serving a LiteRT export needs ai-edge-litert: pip install "jaxqa[litert]"') from None
        self.path, self.lengths, self.inputs = path, sorted(record["lengths"]), record["inputs"]
        try:
            interpreter = Interpreter(model_path=str(path), num_threads=_cores())
            self.runners = {length: interpreter.get_signature_runner(signature(length)) for length in self.lengths}
        except Exception as err:  # the interpreter raises ValueError or RuntimeError for files it cannot read
            raise Error(f"{path}: the LiteRT interpreter cannot load it ({str(err).splitlines()[0]})") from None

    def __call__(self, input_ids, attention_mask, token_type_ids) -> tuple[np.ndarray, np.ndarray]:
        batch, width = np.shape(input_ids)
        if width > self.lengths[-1]:
            raise Error(
                f"{self.path}: windows of {width} tokens do not fit this LiteRT export's {self.lengths[-1]}; "
                f"ask for at most {self.lengths[-1]} (max_seq_length), or export with --sequence {width}"
            )
        start = np.zeros((batch, width), np.float32)
        end = np.zeros((batch, width), np.float32)
        length = next(n for n in self.lengths if n >= width)
        for row in range(batch):
            feeds = {}
            for name, array in zip(self.inputs, (input_ids, attention_mask, token_type_ids)):
                window = np.zeros((1, length), np.int32)
                window[0, :width] = array[row]
                feeds[name] = window
            logits = self.runners[length](**feeds)
            start[row], end[row] = logits["start_logits"][0, :width], logits["end_logits"][0, :width]
        return start, end


RUNTIMES: dict[str, type[OnnxRuntime] | type[LiteRTRuntime]] = {"onnx": OnnxRuntime, "litert": LiteRTRuntime}


class Exported:
    """An export folder opened to run: `source` is its `open_checkpoint`, whose
    config.json it keeps; `precision` "auto" or the export's own. `max_length`
    is the longest window it takes, in tokens: the position table's, or a
    LiteRT model's longest length."""

    def __init__(self, source: Source, precision: str = "auto"):
        self.folder: Path = source.folder
        self.model_type = source.model_type
        self.config = source.config
        record_path = self.folder / RECORD_FILE
        try:
            record = json.loads(record_path.read_text())
            self.format: str = record["format"]
            self.precision: str = record["precision"]
            runtime = RUNTIMES[self.format]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise Error(f"{record_path}: not an export record jaxqa wrote ({err})") from None
        self._check(precision)
        try:
            self.runtime: OnnxRuntime | LiteRTRuntime = runtime(self.folder / MODEL_FILES[self.format], record)
        except KeyError as err:
            raise Error(f"{record_path}: not an export record jaxqa wrote (no {err})") from None
        self.max_length: int = self.config.max_position_embeddings
        if isinstance(self.runtime, LiteRTRuntime):  # fixed shapes: its signatures' longest
            self.max_length = min(self.max_length, self.runtime.lengths[-1])

    def _check(self, precision: str) -> None:
        if precision not in ("auto", self.precision):
            raise Error(
                f"precision {precision}: {self.folder} is {EXPORT_NAMES[self.format]} in {self.precision}, "
                "which runs in that precision only (ask for it, or auto)"
            )

    def with_precision(self, precision: str) -> "Exported":
        """This model, if `precision` is its own or "auto"; an export holds one precision."""
        self._check(precision)
        return self

    @functools.cached_property
    def tokenizer(self):
        return load_tokenizer(self.folder, self.config.vocab_size)

    def __call__(self, input_ids, attention_mask, token_type_ids):
        return self.runtime(input_ids, attention_mask, token_type_ids)
