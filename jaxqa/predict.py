"""Answers questions about contexts with a checkpoint, from the command line.

    python -m jaxqa.predict --checkpoint DIR --question Q --context C
    python -m jaxqa.predict --checkpoint DIR --file questions.jsonl [--top-k 3]

`--file` holds a JSON list of {"question", "context"} objects, or one such
object per line (JSON Lines). Each input gets one line of JSON on stdout: its
answer {"score", "start", "end", "answer"}, or with --top-k above 1 a list of
them. Bad input gives a one-line error naming the file and line, and exit code 2.
"""

import argparse
import json
import sys
from pathlib import Path

from jaxqa import compilation_cache, models, precision
from jaxqa.checkpoint import open_checkpoint
from jaxqa.errors import Error, log_to
from jaxqa.pipeline import InputError, default_doc_stride, pipeline
from jaxqa.pretrained import open_model
from jaxqa.squad.features import FeatureSettings

# Inputs answered per pipeline call: enough for full batches, few enough to
# print the first answers early.
CHUNK = 256


class BadInput(Error):
    """Input that cannot be read or answered; the message says where it is."""


def read_inputs(path: str | Path) -> tuple[list[dict], list[str]]:
    """The {"question", "context"} objects of a JSON list or a JSON Lines file,
    and where each one is ("FILE:LINE", or "FILE: item N of the list")."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise BadInput(f"{path}: cannot read ({err})") from None
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as err:
            raise BadInput(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
        located = [(item, f"{path}: item {number} of the list") for number, item in enumerate(items, 1)]
    else:
        located = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    located.append((json.loads(line), f"{path}:{number}"))
                except json.JSONDecodeError as err:
                    raise BadInput(f"{path}:{number}: not valid JSON ({err.msg})") from None
    if not located:
        raise BadInput(f"{path}: no questions in the file")
    return [checked_input(item, where) for item, where in located], [where for _, where in located]


def checked_input(item, where: str) -> dict:
    if not isinstance(item, dict):
        raise BadInput(f"{where}: expected a JSON object with 'question' and 'context', got {type(item).__name__}")
    for key in ("question", "context"):
        if not isinstance(item.get(key), str) or not item[key].strip():
            raise BadInput(f"{where}: {key!r} must be a non-empty string")
    return {"question": item["question"], "context": item["context"]}


# The flags by the window settings they set (`FeatureSettings`); the question keeps its default length.
FLAGS = {"max_seq_length": "--max-seq-len", "doc_stride": "--doc-stride", "max_query_length": "max_question_len"}


def main(argv=None, prog: str = "python -m jaxqa.predict") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="jaxqa checkpoint folder (or a Hugging Face folder)")
    given = parser.add_mutually_exclusive_group(required=True)
    given.add_argument("--question", help="the question (with --context)")
    given.add_argument("--file", help='JSON list or JSON Lines of {"question", "context"} objects')
    parser.add_argument("--context", help="the text that holds the answer (with --question)")
    parser.add_argument("--top-k", type=int, default=1, help="answers per question")
    parser.add_argument("--handle-impossible-answer", action="store_true", help="allow the empty answer")
    parser.add_argument("--max-answer-len", type=int, default=15, help="longest answer, in tokens")
    parser.add_argument("--max-seq-len", "--max-seq-length", type=int, default=384, help="tokens per window")
    parser.add_argument("--doc-stride", type=int, default=None, help="context tokens shared by consecutive windows")
    parser.add_argument("--batch-size", type=int, default=None, help="most windows per model call")
    precision.add_flag(parser)
    parser.add_argument("--compilation-cache", default="", help=compilation_cache.HELP)
    args = parser.parse_args(argv)
    if (args.question is None) != (args.context is None):
        parser.error("--question and --context go together (or use --file)")
    if args.top_k < 1 or args.max_answer_len < 1:
        parser.error("--top-k and --max-answer-len must be at least 1")
    try:
        if args.file is None:
            where = "--question/--context"
            inputs, located = [checked_input({"question": args.question, "context": args.context}, where)], [where]
        else:
            inputs, located = read_inputs(args.file)
        doc_stride = default_doc_stride(args.max_seq_len) if args.doc_stride is None else args.doc_stride
        FeatureSettings(args.max_seq_len, doc_stride).check(FLAGS.__getitem__)
        if args.batch_size is not None and args.batch_size < 1:
            raise Error(f"--batch-size {args.batch_size}: must be at least 1")
        compilation_cache.enable(args.compilation_cache)
        source = open_checkpoint(args.checkpoint)
        models.check_length(source.config, args.max_seq_len, "--max-seq-len")
        with log_to(sys.stderr):
            model = open_model(source, args.precision)
        qa = pipeline(
            model,
            max_seq_len=args.max_seq_len,
            doc_stride=doc_stride,
            batch_size=args.batch_size,
            precision=model.precision,
        )
        for begin in range(0, len(inputs), CHUNK):
            try:
                results = qa(
                    inputs[begin : begin + CHUNK],
                    top_k=args.top_k,
                    max_answer_len=args.max_answer_len,
                    handle_impossible_answer=args.handle_impossible_answer,
                )
            except InputError as err:
                raise BadInput(f"{located[begin + err.index]}: {err.reason}") from None
            for result in results:
                print(json.dumps(result, ensure_ascii=False))
            sys.stdout.flush()
    except (OSError, Error) as err:
        print(f"jaxqa.predict: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
