"""Where questions come from: one reader for every kind of SQuAD-like data.

`read(source, split)` takes
- the official SQuAD JSON (`{"data": [articles]}`), read as `jaxqa.squad.examples` reads it;
- a flat file, one row per question, in the layout of the hub's `squad` and of
  `run_qa.py` (`id`, `title`, `context`, `question`,
  `answers: {text: [...], answer_start: [...]}`): `.jsonl`, `.json` (told apart
  from the official JSON by its content), `.csv` (answers as JSON text) or
  `.parquet`, read by `datasets` into Arrow tables that are memory-mapped;
- a hub dataset `name[:config][@split]` with such rows, from the local
  `datasets` cache when it holds it, else from the hub; one line says so at
  once when neither has it.

Flat rows are checked one by one; a bad row is refused in one line naming the
file, the row (counted from 1) and the field, or with `skip_bad_rows` left out
and reported. Every kind gives the same `SquadData`.
"""

import contextlib
import csv
import dataclasses
import hashlib
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from tqdm import tqdm

from jaxqa.errors import Error
from jaxqa.squad.examples import Example, SquadData, articles_from_examples, read_squad

log = logging.getLogger(__name__)

# The `datasets` loader of each flat file's suffix.
FLAT_FILES = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
# Reading this many rows or more shows a progress bar.
PROGRESS_ROWS = 50_000
# Bad rows whose line is shown when they are skipped; the rest are counted.
SHOWN_BAD_ROWS = 10


class SourceError(Error):
    """Data that cannot be read, or a bad row; the message names the file or dataset, the row and the field."""


@dataclasses.dataclass(frozen=True)
class Columns:
    """The columns of flat rows that hold each field (run_qa.py's names and defaults).
    A `title` column is read where there is one."""

    question: str = "question"
    context: str = "context"
    answers: str = "answers"
    id: str = "id"


# The flag that names each column, as train and evaluate spell it, and its help.
COLUMN_FLAGS = {
    "question": ("--question-column-name", "flat data: the column of the questions"),
    "context": ("--context-column-name", "flat data: the column of the contexts"),
    "answers": ("--answer-column-name", "flat data: the column of the answers"),
    "id": ("--id-column-name", "flat data: the column of the question ids"),
}
SKIP_HELP = "leave out the flat rows that fail the checks, saying how many and which, instead of refusing the data"


DEFAULT_COLUMNS = Columns()


def add_column_flags(parser) -> None:
    """The column flags, for commands that read data (train takes them from its settings)."""
    for field, (flag, text) in COLUMN_FLAGS.items():
        default = getattr(DEFAULT_COLUMNS, field)
        parser.add_argument(flag, default=default, help=f"{text} (default: {default})")


def add_flags(parser) -> None:
    """The column flags and --skip-bad-rows."""
    add_column_flags(parser)
    parser.add_argument("--skip-bad-rows", action="store_true", help=SKIP_HELP)


def columns_of(args) -> Columns:
    """The `Columns` that the flags of `add_flags` give."""
    return Columns(args.question_column_name, args.context_column_name, args.answer_column_name, args.id_column_name)


def read(
    source: str, split: str = "train", columns: Columns = DEFAULT_COLUMNS, skip_bad_rows: bool = False
) -> SquadData:
    """The questions of `source`: an official SQuAD JSON file, a flat file, or a
    hub dataset `name[:config][@split]` (`split` when it names none)."""
    path = Path(source)
    if path.is_file():
        if path.stat().st_size == 0:
            raise SourceError(f"{source}: empty file")
        # Any other name is read as the official SQuAD JSON, as it always was.
        if path.suffix not in FLAT_FILES or (path.suffix == ".json" and is_official(path)):
            return read_squad(path)
        rows = flat_rows(path)
        fingerprint = f"{_digest(path)} {json.dumps([dataclasses.astuple(columns), skip_bad_rows])}"
    elif path.exists() or path.suffix in FLAT_FILES or source.startswith((".", "/", "~")):
        raise SourceError(f"{source}: no such file")
    else:
        rows, fingerprint = hub_rows(source, split), None
    examples = examples_of(rows, source, columns, skip_bad_rows)
    mismatched: tuple[str, ...] = ()  # refused row by row above
    return SquadData(examples, articles_from_examples(examples), mismatched, fingerprint)


def is_official(path: Path) -> bool:
    """Whether a `.json` file holds the official SQuAD JSON rather than flat rows.

    Only its first line is parsed when that is a whole JSON value: the official
    files are one line, and a JSON Lines file's first line is its first row. A
    value over several lines is parsed whole."""
    with open(path, "rb") as f:
        first = f.readline()
    if first.lstrip().startswith(b"["):
        return False
    try:
        document = json.loads(first)
    except ValueError:
        try:
            document = json.loads(path.read_bytes())
        except ValueError:
            return False  # not one JSON value: JSON Lines, or not JSON, which `datasets` says
    return isinstance(document, dict) and "data" in document


def flat_rows(path: Path):
    """The rows of a flat file as a `datasets.Dataset`: Arrow, memory-mapped from the
    `datasets` cache ($HF_DATASETS_CACHE), where it is converted once."""
    import datasets  # imported here: loading it is slow and only flat data needs it

    options = {}
    if path.suffix == ".csv":
        # Every cell read as text, as written: no numbers made of ids, no NaN made of "".
        with open(path, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), [])
        strings = datasets.Features({name: datasets.Value("string") for name in header})
        options = {"features": strings, "keep_default_na": False}
    try:
        with quiet():
            return datasets.load_dataset(FLAT_FILES[path.suffix], data_files=str(path), split="train", **options)
    except Exception as err:  # what `datasets` and the file format raise varies: one line naming the file
        cause = err.__cause__ or err
        reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise SourceError(f"{path}: cannot be read as {path.suffix[1:]} ({reason})") from None


def hub_rows(spec: str, split: str):
    """The rows of the hub dataset `name[:config][@split]`, from the local `datasets`
    cache when it holds them (no network needed), else from the hub after one
    look at whether it answers, so that a machine without network fails at once
    instead of after the hub client's retries."""
    import datasets
    import huggingface_hub

    name_and_config, _, asked = spec.partition("@")
    name, _, config = name_and_config.partition(":")
    split = asked or split
    try:
        with quiet(), _offline():
            return datasets.load_dataset(name, config or None, split=split)
    except (ConnectionError, FileNotFoundError, ValueError) as err:
        cached_error = err
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        raise SourceError(
            f"{spec}: not in the local datasets cache, and HF_HUB_OFFLINE is set "
            f"({type(cached_error).__name__}); use a local file (a SQuAD JSON or a flat .jsonl/.json/.csv/.parquet)"
        )
    try:
        huggingface_hub.HfApi().dataset_info(name, timeout=10)
    except Exception as err:  # no network, no such dataset, no access
        raise SourceError(
            f"{spec}: not in the local datasets cache, and the hub cannot give it ({type(err).__name__}); "
            "use a local file (a SQuAD JSON or a flat .jsonl/.json/.csv/.parquet)"
        ) from None
    try:
        with quiet():
            return datasets.load_dataset(name, config or None, split=split)
    except Exception as err:
        raise SourceError(f"{spec}: cannot load the hub dataset ({type(err).__name__}: {err})") from None


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    """`datasets` and the hub client in offline mode within the block: what the
    local cache holds, with no request (their switch is read once, at import)."""
    import datasets
    import huggingface_hub

    saved = datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = huggingface_hub.constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE = saved


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """`datasets` without its progress bars and log lines within the block (it
    logs its own errors too): a refusal stays one line."""
    import datasets

    bars = datasets.utils.logging.is_progress_bar_enabled()
    verbosity = datasets.logging.get_verbosity()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(logging.CRITICAL)
    try:
        yield
    finally:
        datasets.logging.set_verbosity(verbosity)
        if bars:
            datasets.enable_progress_bars()


def _digest(path: Path) -> str:
    """The SHA-256 of a file, read a megabyte at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class BadRow(Exception):
    """A row that fails a check: `field` is the column at fault."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def examples_of(rows, where: str, columns: Columns, skip_bad_rows: bool) -> list[Example]:
    """The examples of flat `rows` (a `datasets.Dataset`), read a batch at a time.
    A bad row raises a `SourceError` naming `where`, the row, its id and the
    field, or with `skip_bad_rows` is left out and reported."""
    missing = [
        f"{name!r} ({COLUMN_FLAGS[field][0]})" for field, name in vars(columns).items() if name not in rows.column_names
    ]
    if missing:
        raise SourceError(f"{where}: no column {', '.join(missing)}; its columns: {', '.join(rows.column_names)}")
    if not len(rows):
        raise SourceError(f"{where}: no rows")
    names = [*vars(columns).values(), *(["title"] if "title" in rows.column_names else [])]
    examples: list[Example] = []
    row_of_id: dict[str, int] = {}
    bad: list[tuple[int, str]] = []
    context = ""
    with tqdm(total=len(rows), unit="row", disable=len(rows) < PROGRESS_ROWS, desc=f"reading {where}") as progress:
        for number, values in enumerate(_values(rows, names), start=1):
            try:
                example = _example(values, context)
                first = row_of_id.setdefault(example.id, number)
                if first != number:
                    raise BadRow(columns.id, f"{example.id!r} is also the id of row {first}")
            except BadRow as err:
                field = getattr(columns, err.field, err.field)
                line = f"{where}: row {number}: {field!r}: {err}"
                if not skip_bad_rows:
                    raise SourceError(f"{line} (--skip-bad-rows leaves such rows out)") from None
                bad.append((number, line))
                continue
            finally:
                progress.update(1)
            context = example.context  # rows of one paragraph share one string
            examples.append(example)
    _report(bad, where)
    if not examples:
        raise SourceError(f"{where}: no row passes the checks")
    return examples


def _values(rows, names: Sequence[str]) -> Iterator[tuple]:
    """Each row's values of the columns `names` (title last, "" without it), a thousand rows at a time."""
    for batch in rows.iter(batch_size=1000):
        columns = [batch[name] for name in names]
        if len(columns) == 4:
            columns.append([""] * len(columns[0]))
        yield from zip(*columns)


def _example(values: tuple, previous_context: str) -> Example:
    """The example of one flat row's values (question, context, answers, id, title),
    or a `BadRow` naming the field at fault."""
    question, context, answers, id, title = values
    if not isinstance(id, str) or not id:
        raise BadRow("id", f"must be a non-empty string, got {_kind(id)}")
    for field, value in (("question", question), ("context", context)):
        if not isinstance(value, str):
            raise BadRow(field, f"must be a string, got {_kind(value)}")
    if not context.strip():
        raise BadRow("context", "empty")
    if not isinstance(title, str):
        raise BadRow("title", f"must be a string, got {_kind(title)}")
    texts, starts = _answers(answers)
    for text, start in zip(texts, starts):
        found = context[start : start + len(text)]
        if start < 0 or found != text:
            raise BadRow(
                "answers", f"answer_start {start} does not point at its text {text!r:.60} (found {found!r:.60})"
            )
    context = previous_context if context == previous_context else context
    return Example(id, title, question, context, texts, starts, is_impossible=not texts)


def _answers(value) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """The texts and starts of an answers value: {text: [...], answer_start: [...]},
    or its JSON text (as a CSV cell holds it)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise BadRow("answers", f"not JSON: {value!r:.60}") from None
    if not isinstance(value, Mapping) or not {"text", "answer_start"} <= set(value):
        raise BadRow("answers", f"must be {{text: [...], answer_start: [...]}}, got {_kind(value)}")
    texts, starts = value["text"], value["answer_start"]
    if not isinstance(texts, list) or not isinstance(starts, list):
        raise BadRow("answers", f"text and answer_start must be lists, got {_kind(texts)} and {_kind(starts)}")
    if len(texts) != len(starts):
        raise BadRow("answers", f"{len(texts)} texts but {len(starts)} answer_start values")
    if not all(isinstance(text, str) for text in texts):
        raise BadRow("answers", f"every text must be a string, got {_kind(texts)}")
    if not all(isinstance(start, int) and not isinstance(start, bool) for start in starts):
        raise BadRow("answers", f"every answer_start must be an integer, got {_kind(starts)}")
    return tuple(texts), tuple(starts)


def _kind(value) -> str:
    return f"{type(value).__name__} {value!r:.40}"


def _report(bad: list[tuple[int, str]], where: str) -> None:
    """Says which rows were skipped: the first few rows' lines, then how many and which in all."""
    for _, line in bad[:SHOWN_BAD_ROWS]:
        log.warning(f"skipped {line}")
    if bad:
        log.warning(f"{where}: skipped {len(bad)} bad rows (rows {', '.join(str(number) for number, _ in bad)})")
