"""What an export folder is: the names and constants that the writer
(`jaxqa.export.write`) and the runtimes (`jaxqa.export.runtime`) both read.

    OUT/model.onnx or OUT/model.tflite   the model
    OUT/config.json, tokenizer files     the checkpoint's own
    OUT/export.json                      the record: format, model_type, precision,
                                         inputs, outputs, and a LiteRT model's lengths

The model takes `INPUTS` (token ids, attention mask, token types), each int32
(batch, sequence), and gives `OUTPUTS`, float32 (batch, sequence); a LiteRT
model holds one signature per window length N, `signature(N)`, over (1, N).
The record names the model's inputs and outputs; a runtime binds them by
name (`input_roles`), so that the Task Library's names (`TASK_LIBRARY_INPUTS`,
`TASK_LIBRARY_OUTPUTS`) serve too, and checks the record against the model file.
"""

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


def signature(length: int) -> str:
    """The LiteRT signature of windows (1, length)."""
    return f"length_{length}"


def input_roles(names) -> tuple[str, ...] | None:
    """The names among `names` of the token ids, attention mask and token types,
    in that order, if `names` are `INPUTS` or `TASK_LIBRARY_INPUTS` in any order; else None."""
    for roles in (INPUTS, TASK_LIBRARY_INPUTS):
        if sorted(names) == sorted(roles):
            return roles
    return None
