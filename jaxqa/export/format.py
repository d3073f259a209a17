"""What an export folder is: the names and constants that the writer
(`jaxqa.export.write`) and the runtimes (`jaxqa.export.runtime`) both read.

    OUT/model.onnx or OUT/model.tflite   the model
    OUT/config.json, tokenizer files     the checkpoint's own
    OUT/export.json                      the record: format, model_type, precision,
                                         inputs, outputs, a LiteRT model's lengths,
                                         and the config's sizes

The model takes `INPUTS` (token ids, attention mask, token types), each int32
(batch, sequence), and gives `OUTPUTS`, float32 (batch, sequence); a LiteRT
model holds one signature per window length N, `signature(N)`, over (1, N).
The record names the model's inputs and outputs; a runtime binds them by
name (`input_roles`), so that the Task Library's names (`TASK_LIBRARY_INPUTS`,
`TASK_LIBRARY_OUTPUTS`) serve too, and checks the record against the model file.
The record also holds the `SIZES` of the config the model file was written
from, so that an edited config.json is found (`read_record`).

A checkpoint keeps its own exports beside its weights, in `CKPT/exports/`
(`EXPORTS_FOLDER`): `jaxqa export CKPT` writes `CKPT/exports/<format>-<precision>`
(`beside`), and `jaxqa.pipeline(CKPT)` measures them against XLA (`jaxqa.runtimes`).
"""

import json
from pathlib import Path

from jaxqa.errors import Error

FORMATS = ("onnx", "litert")
MODEL_FILES = {"onnx": "model.onnx", "litert": "model.tflite"}
EXPORT_NAMES = {"onnx": "an ONNX export", "litert": "a LiteRT export"}
RECORD_FILE = "export.json"
PRECISIONS = ("fp32", "int8")
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OUTPUTS = ("start_logits", "end_logits")
TASK_LIBRARY_INPUTS = ("ids", "mask", "segment_ids")  # BertQuestionAnswerer's, in the same roles as INPUTS
TASK_LIBRARY_OUTPUTS = ("end_logits", "start_logits")  # in its order
TASK_LIBRARY_LENGTH = 384
DEFAULT_LENGTH = 384  # a LiteRT model's longest window, SQuAD's usual max_seq_length
DEFAULT_LENGTH_STEP = 64
SIZES = ("vocab_size", "max_position_embeddings")  # the config's sizes that the model file holds
EXPORTS_FOLDER = "exports"  # a checkpoint folder's exports, each a folder of its own


def beside(checkpoint: Path, fmt: str, precision: str) -> Path:
    """The export folder that `jaxqa export CHECKPOINT` writes when no OUT is given."""
    return checkpoint / EXPORTS_FOLDER / f"{fmt}-{precision}"


def signature(length: int) -> str:
    """The LiteRT signature of windows (1, length)."""
    return f"length_{length}"


def read_record(path: Path, config) -> dict:
    """The export record at `path`, checked against what jaxqa writes and
    against `config` (the folder's config.json): an edited or damaged record,
    or a config whose sizes are not the model file's, is an `Error` naming the
    file and key."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise Error(f"{path}: not an export record jaxqa wrote ({err})") from None
    if not isinstance(record, dict):
        raise Error(f"{path}: not an export record jaxqa wrote (a JSON object)")
    for key, allowed in (("format", FORMATS), ("precision", PRECISIONS)):
        if record.get(key) not in allowed:
            raise Error(f"{path}: {key!r} is {record.get(key)!r}, not one of {', '.join(allowed)}")
    for key, namings in (("inputs", (INPUTS, TASK_LIBRARY_INPUTS)), ("outputs", (OUTPUTS, TASK_LIBRARY_OUTPUTS))):
        if sorted(_names(record.get(key))) not in [sorted(names) for names in namings]:
            raise Error(f"{path}: {key!r} is {record.get(key)!r}, not the names jaxqa writes ({', '.join(namings[0])})")
    if record["format"] == "litert":
        lengths = record.get("lengths")
        if not (isinstance(lengths, list) and lengths and all(_length(n, config) for n in lengths)):
            raise Error(
                f"{path}: 'lengths' is {lengths!r}, not window lengths of 1 to {config.max_position_embeddings}"
            )
    sizes = record.get("sizes", {})  # the record of an earlier jaxqa has none
    if not isinstance(sizes, dict):
        raise Error(f"{path}: 'sizes' is {sizes!r}, not the sizes of the config the model was exported with")
    for key, size in sizes.items():
        if key in SIZES and getattr(config, key) != size:
            raise Error(
                f"{path.parent / 'config.json'}: {key} is {getattr(config, key)}, but the model was exported "
                f"with {size} ({path})"
            )
    return record


def _names(value) -> list:
    return value if isinstance(value, list) and all(isinstance(name, str) for name in value) else []


def _length(value, config) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= config.max_position_embeddings


def input_roles(names) -> tuple[str, ...] | None:
    """The names among `names` of the token ids, attention mask and token types,
    in that order, if `names` are `INPUTS` or `TASK_LIBRARY_INPUTS` in any order; else None."""
    for roles in (INPUTS, TASK_LIBRARY_INPUTS):
        if sorted(names) == sorted(roles):
            return roles
    return None
