"""Answers questions about contexts with a checkpoint, from the command line.

    python -m jaxqa.predict --checkpoint DIR --question Q --context C
    python -m jaxqa.predict --checkpoint DIR --file questions.jsonl [--output answers.jsonl] [--top-k 3]

`--file` (`-` for stdin) holds one {"question", "context"} object (an "id"
too if you like), a JSON list of them, or one per line (JSON Lines), in UTF-8
with or without a byte order mark. Each input gets one line of JSON, in the
order of the inputs: its "id" (when it has one) and "question", then its answer
("score", "start", "end", "answer"), or with --top-k above 1 its "answers", a
list of them. `--question` prints the answer alone. The lines go to stdout, or
to `--output`, written whole once every input is answered; on a terminal a
progress bar counts the questions on stderr. A reader that stops reading
(`| head`) ends the command quietly, with exit code 0.

Every input is checked before any is answered: each bad one is named on a line
of its own on stderr (FILE:LINE, or FILE: item N of the list, and what is
wrong), and then nothing is answered and the exit code is 2.
"""

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from tqdm import tqdm

from jaxqa import compilation_cache, models, precision, runtimes
from jaxqa.checkpoint import open_checkpoint
from jaxqa.errors import Error, log_to, write_file
from jaxqa.pipeline import DEFAULT_MAX_SEQ_LEN, NO_TOKENS, QuestionAnsweringPipeline, default_doc_stride, pipeline
from jaxqa.squad.features import FeatureSettings

# Inputs answered per pipeline call: enough for full batches, few enough to
# print the first answers early.
CHUNK = 256
STDIN = "-"


class BadInput(Error):
    """Input that cannot be read or answered: a line per problem, each saying where it is."""


@dataclasses.dataclass(frozen=True)
class Input:
    question: str
    context: str
    id: str | int | None  # the input's own, kept in its output line
    where: str  # "FILE:LINE", or "FILE: item N of the list"


def read_text(path: str) -> tuple[str, str]:
    """The name that messages give the file (`<stdin>` for "-"), and its text without a byte order mark."""
    name = "<stdin>" if path == STDIN else path
    try:
        data = sys.stdin.buffer.read() if path == STDIN else Path(path).read_bytes()
        return name, data.decode("utf-8-sig")
    except OSError as err:
        raise BadInput(f"{name}: cannot read ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise BadInput(f"{name}: not UTF-8 text ({err.reason} at byte {err.start})") from None


def parse(name: str, text: str) -> list[tuple[object, str]]:
    """The JSON values of a file (a list, one object, or JSON Lines), each with
    where it is; a part that is not JSON is there as the `BadInput` that says so."""
    stripped = text.lstrip()
    first_line = text[: len(text) - len(stripped)].count("\n") + 1
    if stripped.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as err:
            return [(BadInput(f"{name}:{err.lineno}: not valid JSON ({err.msg})"), name)]
        return [(item, f"{name}: item {number} of the list") for number, item in enumerate(items, 1)]
    try:
        return [(json.loads(text), f"{name}:{first_line}")]  # one object, over one line or several
    except json.JSONDecodeError:
        pass
    located: list[tuple[object, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                located.append((json.loads(line), f"{name}:{number}"))
            except json.JSONDecodeError as err:
                located.append((BadInput(f"{name}:{number}: not valid JSON ({err.msg})"), f"{name}:{number}"))
    return located


def checked_input(item, where: str) -> Input:
    """`item` as an `Input`, or a `BadInput` naming where it is and the field at fault."""
    if not isinstance(item, dict):
        raise BadInput(f"{where}: expected a JSON object with 'question' and 'context', got {type(item).__name__}")
    for key in ("question", "context"):
        if not isinstance(item.get(key), str) or not item[key].strip():
            raise BadInput(f"{where}: {key!r} must be a non-empty string")
    qid = item.get("id")
    if qid is not None and (not isinstance(qid, (str, int)) or isinstance(qid, bool)):
        raise BadInput(f"{where}: 'id' must be a string or a whole number, got {type(qid).__name__}")
    return Input(item["question"], item["context"], qid, where)


def read_inputs(path: str) -> list[Input]:
    """The inputs of `--file`, every one checked: a `BadInput` lists each bad one."""
    name, text = read_text(path)
    inputs, problems = [], []
    for item, where in parse(name, text):
        try:
            if isinstance(item, BadInput):
                raise item
            inputs.append(checked_input(item, where))
        except BadInput as err:
            problems.append(str(err))
    if problems:
        raise BadInput("\n".join(problems))
    if not inputs:
        raise BadInput(f"{name}: no questions in the file")
    return inputs


def check_tokens(qa: QuestionAnsweringPipeline, inputs: list[Input]) -> None:
    """Refuses, before any is answered, every input whose context has no tokens."""
    empty = qa.untokenized([item.context for item in inputs])
    if empty:
        raise BadInput("\n".join(f"{inputs[i].where}: {NO_TOKENS}" for i in empty))


def output_line(item: Input, result, keyed: bool) -> str:
    """An input's line of JSON: its answer (or list of answers) alone, or when
    `keyed` its id (if it has one) and question, then its answer's fields (or "answers")."""
    if not keyed:
        return json.dumps(result, ensure_ascii=False)
    head = {} if item.id is None else {"id": item.id}
    body = result if isinstance(result, dict) else {"answers": result}
    return json.dumps({**head, "question": item.question, **body}, ensure_ascii=False)


def answer_all(qa: QuestionAnsweringPipeline, inputs: list[Input], args, keyed: bool) -> None:
    """Answers the inputs a chunk at a time, each chunk's lines printed (or,
    with --output, written once all are answered)."""
    written: list[str] = []
    with tqdm(total=len(inputs), unit="question", disable=not sys.stderr.isatty(), file=sys.stderr) as progress:
        for begin in range(0, len(inputs), CHUNK):
            chunk = inputs[begin : begin + CHUNK]
            results = qa(
                [{"question": item.question, "context": item.context} for item in chunk],
                top_k=args.top_k,
                max_answer_len=args.max_answer_len,
                handle_impossible_answer=args.handle_impossible_answer,
            )
            lines = [output_line(item, result, keyed) for item, result in zip(chunk, results)]
            if args.output is None:
                print("\n".join(lines), flush=True)
            else:
                written += lines
            progress.update(len(chunk))
    if args.output is not None:
        write_file(args.output, "".join(line + "\n" for line in written))


# The flags by the window settings they set (`FeatureSettings`); the question keeps its default length.
FLAGS = {"max_seq_length": "--max-seq-len", "doc_stride": "--doc-stride", "max_query_length": "max_question_len"}


def windows(max_seq_len: int, doc_stride: int | None) -> FeatureSettings:
    """The window flags' settings (--doc-stride by default half a window, at most
    128), checked; a refusal names the flag."""
    doc_stride = default_doc_stride(max_seq_len) if doc_stride is None else doc_stride
    return FeatureSettings(max_seq_len, doc_stride).check(FLAGS.__getitem__)


def parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="jaxqa checkpoint folder (or a Hugging Face folder)")
    given = p.add_mutually_exclusive_group(required=True)
    given.add_argument("--question", help="the question (with --context)")
    given.add_argument(
        "--file", help='a {"question", "context"} object, a JSON list or JSON Lines of them; - for stdin'
    )
    p.add_argument("--context", help="the text that holds the answer (with --question)")
    p.add_argument("--output", help="write the answers' lines to this file, once all are answered (default: stdout)")
    p.add_argument("--top-k", type=int, default=1, help="answers per question")
    p.add_argument("--handle-impossible-answer", action="store_true", help="allow the empty answer")
    p.add_argument("--max-answer-len", type=int, default=15, help="longest answer, in tokens")
    p.add_argument(
        "--max-seq-len",
        "--max-seq-length",
        type=int,
        help="tokens per window (default: 384, or the model's longest window if shorter)",
    )
    p.add_argument("--doc-stride", type=int, default=None, help="context tokens shared by consecutive windows")
    p.add_argument("--batch-size", type=int, default=None, help="most windows per model call")
    precision.add_flag(p)
    runtimes.add_flag(p)
    p.add_argument("--compilation-cache", default="", help=compilation_cache.HELP)
    return p


def main(argv=None, prog: str = "python -m jaxqa.predict") -> int:
    p = parser(prog)
    args = p.parse_args(argv)
    if (args.question is None) != (args.context is None):
        p.error("--question and --context go together (or use --file)")
    if args.top_k < 1 or args.max_answer_len < 1:
        p.error("--top-k and --max-answer-len must be at least 1")
    try:
        if args.file is None:
            inputs = [checked_input({"question": args.question, "context": args.context}, "--question/--context")]
        else:
            inputs = read_inputs(args.file)
        if args.batch_size is not None and args.batch_size < 1:
            raise Error(f"--batch-size {args.batch_size}: must be at least 1")
        if args.output is not None and not Path(args.output).parent.is_dir():
            raise Error(f"--output {args.output}: its folder does not exist")
        if args.max_seq_len is not None:
            windows(args.max_seq_len, args.doc_stride)  # before the model loads
        compilation_cache.enable(args.compilation_cache)
        source = open_checkpoint(args.checkpoint)
        if args.max_seq_len is not None:
            models.check_length(source.config, args.max_seq_len, "--max-seq-len")
        else:  # the model's default window (a LiteRT export's may be shorter, which its pipeline checks)
            windows(min(DEFAULT_MAX_SEQ_LEN, source.config.max_position_embeddings), args.doc_stride)
        with log_to(sys.stderr):
            qa = pipeline(
                source.folder,
                max_seq_len=args.max_seq_len,
                doc_stride=args.doc_stride,
                batch_size=args.batch_size,
                precision=args.precision,
                runtime=args.runtime,
            )
        check_tokens(qa, inputs)
        answer_all(qa, inputs, args, keyed=args.file is not None)
    except BrokenPipeError:
        # The reader took what it wanted (`| head`); the rest goes nowhere, also at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (OSError, Error) as err:
        for line in str(err).splitlines():
            print(f"jaxqa.predict: error: {line}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
