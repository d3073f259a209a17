"""An export folder (`jaxqa.export.format`) as a model that jaxqa serves.

`Exported` answers to what `jaxqa.pipeline`, `jaxqa.predict` and
`jaxqa.evaluate` ask of a loaded model: its `runtime` (a `jaxqa.engine.Runtime`),
`precision`, `config` and `tokenizer`. ONNX Runtime runs an ONNX export and
the LiteRT interpreter a LiteRT one, on the CPU. Nothing here imports the
writer's code.

A runtime binds the model's inputs and outputs by the names the model file
gives them, whatever order the record lists them in, and refuses a record
that does not match its model file, naming the record and the key.
"""

import functools
import os
import threading
from pathlib import Path

import numpy as np

from jaxqa.checkpoint import Source
from jaxqa.errors import Error
from jaxqa.export.format import (
    EXPORT_NAMES,
    INPUTS,
    MODEL_FILES,
    OUTPUTS,
    RECORD_FILE,
    input_roles,
    read_record,
    signature,
)
from jaxqa.squad.tokenizer import load_tokenizer


def is_export(folder: Path) -> bool:
    return (folder / RECORD_FILE).is_file()


def _bound_inputs(path: Path, record: dict, inputs: list[str], outputs: list[str]) -> tuple[str, ...]:
    """The names of the model file at `path` for token ids, attention mask and
    token types, in that order, once its record is checked to name the file's
    own `inputs` and `outputs` (in any order: names bind them, not places)."""
    for key, own in (("inputs", inputs), ("outputs", outputs)):
        named = record.get(key)
        if not isinstance(named, list) or not all(isinstance(n, str) for n in named) or sorted(named) != sorted(own):
            raise Error(f"{path.parent / RECORD_FILE}: {key} {named!r} are not those of {path.name}, {own}")
    roles = input_roles(inputs)
    if roles is None or sorted(outputs) != sorted(OUTPUTS):
        raise Error(
            f"{path}: inputs {inputs} and outputs {outputs} are not a span model's ({list(INPUTS)} and {list(OUTPUTS)})"
        )
    return roles


class OnnxRuntime:
    """ONNX Runtime's session of a model file, as a `jaxqa.engine.Runtime`. It
    compiles no programs, so `traces` stays 0. Its threads sleep between runs
    instead of spinning: the pipeline featurizes and decodes between runs, and
    on a machine of few cores spinning threads take the cores that work needs.
    A session runs calls from several threads at once (ONNX Runtime's `run`
    is thread-safe)."""

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
        io = [[node.name for node in nodes] for nodes in (self.session.get_inputs(), self.session.get_outputs())]
        self.inputs = _bound_inputs(path, record, *io)

    def __call__(self, input_ids, attention_mask, token_type_ids) -> tuple[np.ndarray, np.ndarray]:
        feeds = {
            name: np.asarray(array, np.int32)
            for name, array in zip(self.inputs, (input_ids, attention_mask, token_type_ids))
        }
        start, end = self.session.run(list(OUTPUTS), feeds)
        return start, end


def _cores() -> int:
    """The cores this process may run on (all of the machine's where the OS does not say)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class LiteRTRuntime:
    """The LiteRT interpreter of a model file whose signatures `length_{L}` take
    windows (1, L), as a `jaxqa.engine.Runtime`: each window of a batch (B, T)
    runs on its own in the shortest L >= T, padded with masked positions, which
    change no logit of the window's own tokens.

    An interpreter holds one set of input and output tensors for all its
    signatures, so a call from one thread would overwrite another's: a lock
    lets one call run at a time (the interpreter's own threads, one per core,
    share out each window's work)."""

    name, traces = "litert", 0

    def __init__(self, path: Path, record: dict):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise Error(f'{path}: serving a LiteRT export needs ai-edge-litert: pip install "jaxqa[litert]"') from None
        self.path = path
        try:
            interpreter = Interpreter(model_path=str(path), num_threads=_cores())
            signatures = interpreter.get_signature_list()
        except Exception as err:  # the interpreter raises ValueError or RuntimeError for files it cannot read
            raise Error(f"{path}: the LiteRT interpreter cannot load it ({str(err).splitlines()[0]})") from None
        self.lengths = _signature_lengths(path, record, set(signatures))
        # jaxqa writes every signature with the same names.
        self.inputs = _bound_inputs(
            path, record, *(signatures[signature(self.lengths[0])][k] for k in ("inputs", "outputs"))
        )
        self.runners = {length: interpreter.get_signature_runner(signature(length)) for length in self.lengths}
        self._running = threading.Lock()

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
            with self._running:
                logits = self.runners[length](**feeds)
                start[row], end[row] = logits["start_logits"][0, :width], logits["end_logits"][0, :width]
        return start, end


def _signature_lengths(path: Path, record: dict, signatures: set[str]) -> list[int]:
    """The record's window lengths, sorted, checked to be those of the model file's `signatures`."""
    lengths = record.get("lengths")
    if (
        not isinstance(lengths, list)
        or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in lengths)
        or len(set(lengths)) != len(lengths)
        or {signature(n) for n in lengths} != signatures
    ):
        raise Error(
            f"{path.parent / RECORD_FILE}: lengths {lengths!r} are not those of {path.name}'s signatures, {sorted(signatures)}"
        )
    return sorted(lengths)


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
        record = read_record(self.folder / RECORD_FILE, self.config)
        self.format: str = record["format"]
        self.precision: str = record["precision"]
        self.lengths: list[int] = sorted(record.get("lengths", []))  # a LiteRT export's windows; [] for ONNX
        self._check(precision)
        self.runtime: OnnxRuntime | LiteRTRuntime = RUNTIMES[self.format](
            self.folder / MODEL_FILES[self.format], record
        )
        self.max_length: int = self.config.max_position_embeddings
        if self.lengths:  # a LiteRT model's fixed shapes: its signatures' longest
            self.max_length = min(self.max_length, self.lengths[-1])

    def _check(self, precision: str) -> None:
        if precision not in ("auto", self.precision):
            raise Error(
                f"precision {precision}: {self.folder} is {EXPORT_NAMES[self.format]} in {self.precision}, "
                "which runs in that precision only (ask for it, or auto)"
            )

    def check_length(self, max_seq_length: int, flag: str) -> None:
        """Refuses windows longer than this export takes (a LiteRT export's
        longest signature), naming `flag`; an ONNX export takes any length."""
        if self.lengths and max_seq_length > self.lengths[-1]:
            raise Error(
                f"{flag} {max_seq_length}: {self.folder} is a LiteRT export of windows of at most "
                f"{self.lengths[-1]} tokens; ask for at most {self.lengths[-1]}, or export with --sequence {max_seq_length}"
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
