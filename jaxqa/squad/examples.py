"""SQuAD v1.1 and v2.0 questions, and the official JSON files.

Every source (`jaxqa.squad.sources`: these files, flat files, the hub) gives
the same `Example` objects. `SquadData.articles` keeps the data in the official
`data` layout, which is what the official metric (`jaxqa.squad.metric`) takes.
"""

import dataclasses
import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

from jaxqa.errors import Error

log = logging.getLogger(__name__)


class SquadFormatError(Error):
    """The data does not follow the SQuAD format; the message names the article and question."""


@dataclasses.dataclass(frozen=True)
class Example:
    """One question about one paragraph.

    `answer_starts[i]` is the character offset of `answer_texts[i]` in `context`.
    An unanswerable SQuAD 2.0 question has `is_impossible` set and no answers.
    """

    id: str
    title: str
    question: str
    context: str
    answer_texts: tuple[str, ...]
    answer_starts: tuple[int, ...]
    is_impossible: bool


@dataclasses.dataclass(frozen=True)
class SquadData:
    examples: list[Example]
    articles: list[dict]  # the official `data` list, for the metric
    # One entry per gold answer whose text is not found at its `answer_start`:
    # such answers are kept (labels are placed by offset, as the reference
    # systems do) but counted, because the label may then be off.
    mismatched_answer_ids: tuple[str, ...]
    # What the examples were read from, for the feature cache: the file's SHA-256
    # (and for flat files, the columns read), with ":N" when only its first N
    # questions are kept; None for hub data.
    fingerprint: str | None = None

    def head(self, count: int) -> "SquadData":
        """The first `count` questions (all of them when count is 0), with their articles."""
        if not count or count >= len(self.examples):
            return self
        examples = self.examples[:count]
        kept = {ex.id for ex in examples}
        mismatched = tuple(i for i in self.mismatched_answer_ids if i in kept)
        fingerprint = self.fingerprint and f"{self.fingerprint}:{count}"
        return SquadData(examples, articles_from_examples(examples), mismatched, fingerprint)


def read_squad(path: str | Path) -> SquadData:
    """Reads an official SQuAD v1.1 or v2.0 JSON file."""
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        raise SquadFormatError(f"{path}: cannot read ({err.strerror})") from None
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SquadFormatError(f"{path}: not a JSON file ({err})") from None
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise SquadFormatError(f"{path}: no 'data' list of articles (not the SQuAD format)")
    data = _from_articles(document["data"], source=str(path))
    return dataclasses.replace(data, fingerprint=hashlib.sha256(raw).hexdigest())


def articles_from_examples(examples: Iterable[Example]) -> list[dict]:
    """Rebuilds the official `data` layout (articles > paragraphs > qas) from examples."""
    articles: dict[str, dict[str, list]] = {}
    for ex in examples:
        paragraphs = articles.setdefault(ex.title, {})
        qa = {
            "id": ex.id,
            "question": ex.question,
            "answers": [{"text": t, "answer_start": s} for t, s in zip(ex.answer_texts, ex.answer_starts)],
            "is_impossible": ex.is_impossible,
        }
        paragraphs.setdefault(ex.context, []).append(qa)
    return [
        {"title": title, "paragraphs": [{"context": c, "qas": qas} for c, qas in paragraphs.items()]}
        for title, paragraphs in articles.items()
    ]


def _from_articles(articles: Sequence[dict], source: str) -> SquadData:
    examples = []
    seen_ids = set()
    for article_number, article in enumerate(articles):
        if not isinstance(article, dict):
            raise SquadFormatError(f"{source}: article {article_number}: expected an object, got {_kind(article)}")
        title = article.get("title", f"<article {article_number}>")
        if not isinstance(title, str):
            raise SquadFormatError(f"{source}: article {article_number}: 'title' must be a string, got {_kind(title)}")
        if not isinstance(article.get("paragraphs"), list):
            raise SquadFormatError(f"{source}: article {title!r}: no 'paragraphs' list")
        for paragraph_number, paragraph in enumerate(article["paragraphs"]):
            where = f"{source}: article {title!r}, paragraph {paragraph_number}"
            if not isinstance(paragraph, dict):
                raise SquadFormatError(f"{where}: expected an object, got {_kind(paragraph)}")
            for key in ("context", "qas"):
                if key not in paragraph:
                    raise SquadFormatError(f"{where}: no {key!r}")
            context = paragraph["context"]
            if not isinstance(context, str):
                raise SquadFormatError(f"{where}: 'context' must be a string, got {_kind(context)}")
            if not context.strip():
                raise SquadFormatError(f"{where}: empty context")
            if not isinstance(paragraph["qas"], list):
                raise SquadFormatError(f"{where}: 'qas' must be a list, got {_kind(paragraph['qas'])}")
            for question_number, qa in enumerate(paragraph["qas"]):
                example = _example(qa, title, context, f"{where}, question {question_number}")
                # Predictions and the metric are keyed by id.
                if example.id in seen_ids:
                    raise SquadFormatError(f"{where}, question {question_number}: id {example.id} is used twice")
                seen_ids.add(example.id)
                examples.append(example)
    return SquadData(examples, list(articles), _mismatches(examples, source))


def _example(qa: dict, title: str, context: str, where: str) -> Example:
    if not isinstance(qa, dict):
        raise SquadFormatError(f"{where}: expected an object, got {_kind(qa)}")
    if not qa.get("id"):
        raise SquadFormatError(f"{where}: question has no id")
    # Predictions files map ids to answers, and JSON keys are strings.
    if not isinstance(qa["id"], str):
        raise SquadFormatError(f"{where}: 'id' must be a string, got {_kind(qa['id'])}")
    where = f"{where} (id {qa['id']})"
    if "question" not in qa:
        raise SquadFormatError(f"{where}: no 'question'")
    if not isinstance(qa["question"], str):
        raise SquadFormatError(f"{where}: 'question' must be a string, got {_kind(qa['question'])}")
    # The official metric reads every question's answer list, even an empty one.
    if not isinstance(qa.get("answers"), list):
        raise SquadFormatError(f"{where}: no 'answers' list")
    # Read strictly: bool("false") is True, which would drop an answerable question.
    is_impossible = qa.get("is_impossible", False)
    if not isinstance(is_impossible, bool):
        raise SquadFormatError(f"{where}: 'is_impossible' must be true or false, got {_kind(is_impossible)}")
    # SQuAD 2.0 lists no answers for an impossible question (its guesses are
    # under `plausible_answers`), so an empty list is only an error otherwise.
    answers = [] if is_impossible else qa["answers"]
    if not is_impossible and not answers:
        raise SquadFormatError(f"{where}: no answers and not marked is_impossible")
    for answer in qa["answers"]:
        if not isinstance(answer, dict) or not isinstance(answer.get("text"), str):
            raise SquadFormatError(f"{where}: malformed answer {answer!r:.80} (needs a 'text' string)")
    for answer in answers:
        start = answer.get("answer_start")
        if not isinstance(start, int) or isinstance(start, bool):  # int("12") and int(3.7) would pass silently
            raise SquadFormatError(f"{where}: malformed answer {answer!r:.80} ('answer_start' must be an integer)")
    texts = tuple(a["text"] for a in answers)
    starts = tuple(a["answer_start"] for a in answers)
    return Example(qa["id"], title, qa["question"], context, texts, starts, is_impossible)


def _kind(value) -> str:
    """How a JSON value reads in an error message: its type, and the value when short."""
    return f"{type(value).__name__} {value!r:.40}"


def _mismatches(examples: Iterable[Example], source: str) -> tuple[str, ...]:
    ids = tuple(
        ex.id
        for ex in examples
        for text, start in zip(ex.answer_texts, ex.answer_starts)
        if start < 0 or ex.context[start : start + len(text)] != text
    )
    if ids:
        first = list(dict.fromkeys(ids))[:5]  # a question with several such answers named once
        log.warning(f"{source}: {len(ids)} answers are not at their answer_start (first ids: {', '.join(first)})")
    return ids
