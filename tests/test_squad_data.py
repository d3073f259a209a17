"""Reading SQuAD: the official JSON files, `datasets` rows, and bad data."""

import copy
import json
import logging
from pathlib import Path

import pytest
from squad_fixture import SHARED_SQUAD

from jaxqa.squad import examples as squad
from jaxqa.squad import sources

FIXTURES = Path(__file__).parent / "fixtures" / "squad"


def test_reads_v1_examples_and_keeps_the_articles():
    data = squad.read_squad(FIXTURES / "tiny-v1.1.json")
    assert [ex.id for ex in data.examples] == ["jp-1", "jp-2", "jp-3", "cb-1"]
    first = data.examples[0]
    assert first == squad.Example(
        id="jp-1",
        title="Jasper_Park",
        question="When was Jasper National Park established?",
        context=first.context,
        answer_texts=("1907", "in 1907", "1907"),
        answer_starts=(40, 37, 40),
        is_impossible=False,
    )
    assert first.context.startswith("Jasper National Park")
    # The question is kept as written; features strip leading white space.
    assert data.examples[1].question == "   Which province has the park?"
    assert data.examples[3].title == "Crème_brûlée"
    with open(FIXTURES / "tiny-v1.1.json", encoding="utf-8") as f:
        assert data.articles == json.load(f)["data"]


def test_reads_v2_impossible_questions_without_answers():
    data = squad.read_squad(FIXTURES / "tiny-v2.0.json")
    by_id = {ex.id: ex for ex in data.examples}
    assert by_id["ky-2"].is_impossible
    assert by_id["ky-2"].answer_texts == () and by_id["ky-2"].answer_starts == ()
    assert not by_id["ky-1"].is_impossible
    assert by_id["ky-3"].answer_texts == ("京都",)
    assert data.mismatched_answer_ids == ()


def test_mismatched_answer_start_is_counted_not_dropped(caplog):
    with caplog.at_level(logging.WARNING, logger="jaxqa.squad"):
        data = squad.read_squad(FIXTURES / "tiny-v1.1.json")
    # jp-3's answer_start is one character early.
    assert data.mismatched_answer_ids == ("jp-3",)
    assert "jp-3" in [ex.id for ex in data.examples]
    assert "1 answers are not at their answer_start" in caplog.text


def _article(**paragraph_changes) -> dict:
    paragraph = {
        "context": "Paris is the capital of France.",
        "qas": [{"id": "q-1", "question": "What is the capital?", "answers": [{"text": "Paris", "answer_start": 0}]}],
    }
    paragraph.update(paragraph_changes)
    return {"title": "France", "paragraphs": [{k: v for k, v in paragraph.items() if v is not None}]}


def test_a_question_with_several_misplaced_answers_is_named_once(tmp_path, caplog):
    answers = [{"text": "Paris", "answer_start": start} for start in (1, 2, 3)]
    asked = [{"id": "q-1", "question": "What is the capital?", "answers": answers}]
    with caplog.at_level(logging.WARNING, logger="jaxqa.squad"):
        squad.read_squad(_write(tmp_path, [_article(qas=asked)]))
    assert "3 answers are not at their answer_start (first ids: q-1)" in caplog.text


def _write(tmp_path, articles) -> Path:
    path = tmp_path / "data.json"
    path.write_text(json.dumps({"version": "1.1", "data": articles}), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "article, message",
    [
        (_article(context=None), "'France', paragraph 0: no 'context'"),
        (_article(qas=None), "'France', paragraph 0: no 'qas'"),
        (_article(context="  \n"), "'France', paragraph 0: empty context"),
        (_article(qas=[{"question": "Who?", "answers": []}]), "'France', paragraph 0, question 0: question has no id"),
        (_article(qas=[{"id": "q-7", "answers": []}]), "(id q-7): no 'question'"),
        (_article(qas=[{"id": "q-8", "question": "Who?", "answers": []}]), "(id q-8): no answers"),
        (_article(qas=[{"id": "q-9", "question": "Who?", "answers": [{"text": "x"}]}]), "(id q-9): malformed answer"),
        (_article(qas=_article()["paragraphs"][0]["qas"] * 2), "paragraph 0, question 1: id q-1 is used twice"),
        ({"title": "France"}, "article 'France': no 'paragraphs'"),
        # Wrong JSON types: each names the article and question at fault.
        (1, "article 0: expected an object, got int 1"),
        ({"title": 5, "paragraphs": []}, "article 0: 'title' must be a string, got int 5"),
        ({"title": "France", "paragraphs": {"context": "x"}}, "article 'France': no 'paragraphs' list"),
        ({"title": "France", "paragraphs": ["text"]}, "'France', paragraph 0: expected an object, got str 'text'"),
        (_article(context=5), "'France', paragraph 0: 'context' must be a string, got int 5"),
        (_article(qas={"id": "q-1"}), "'France', paragraph 0: 'qas' must be a list, got dict"),
        (_article(qas=["Who?"]), "'France', paragraph 0, question 0: expected an object, got str 'Who?'"),
        (_article(qas=[{"id": 7, "question": "Who?", "answers": []}]), "question 0: 'id' must be a string, got int 7"),
        (
            _article(qas=[{"id": "q-2", "question": None, "answers": []}]),
            "question 0 (id q-2): 'question' must be a string, got NoneType None",
        ),
        (_article(qas=[{"id": "q-3", "question": "Who?", "answers": "Paris"}]), "(id q-3): no 'answers' list"),
        (_article(qas=[{"id": "q-4", "question": "Who?", "is_impossible": True}]), "(id q-4): no 'answers' list"),
        (
            _article(qas=[{"id": "q-5", "question": "Who?", "answers": [{"text": 5, "answer_start": 0}]}]),
            "(id q-5): malformed answer",
        ),
        (
            _article(qas=[{"id": "q-6", "question": "Who?", "answers": [None], "is_impossible": True}]),
            "(id q-6): malformed answer None",
        ),
        # JSON values read strictly: no truthy strings, no numbers standing in for booleans or integers.
        (
            _article(qas=[{"id": "q-10", "question": "Who?", "answers": [], "is_impossible": "false"}]),
            "(id q-10): 'is_impossible' must be true or false, got str 'false'",
        ),
        (
            _article(qas=[{"id": "q-11", "question": "Who?", "answers": [], "is_impossible": 1}]),
            "(id q-11): 'is_impossible' must be true or false, got int 1",
        ),
        *(
            (
                _article(qas=[{"id": "q-12", "question": "Who?", "answers": [{"text": "x", "answer_start": start}]}]),
                "(id q-12): malformed answer",
            )
            for start in ("12", 3.7, True, None)
        ),
    ],
)
def test_bad_data_names_the_article_and_question(tmp_path, article, message):
    path = _write(tmp_path, [article])
    with pytest.raises(squad.SquadFormatError) as error:
        squad.read_squad(path)
    assert message in str(error.value)
    assert str(path) in str(error.value)


def _hub_row(ex: squad.Example) -> dict:
    """A row as `datasets.load_dataset("squad" or "squad_v2")` gives it."""
    return {
        "id": ex.id,
        "title": ex.title,
        "context": ex.context,
        "question": ex.question,
        "answers": {"text": list(ex.answer_texts), "answer_start": list(ex.answer_starts)},
    }


def test_hub_rows_give_the_same_examples():
    from datasets import Dataset

    examples = squad.read_squad(FIXTURES / "tiny-v2.0.json").examples
    rows = Dataset.from_list([_hub_row(ex) for ex in examples])
    assert sources.examples_of(rows, "hub", sources.Columns(), skip_bad_rows=False) == examples


def test_articles_rebuilt_from_examples_read_back_the_same(tmp_path):
    examples = squad.read_squad(FIXTURES / "tiny-v2.0.json").examples
    articles = squad.articles_from_examples(examples)
    assert squad.read_squad(_write(tmp_path, copy.deepcopy(articles))).examples == examples
    assert [len(a["paragraphs"]) for a in articles] == [1]


@pytest.mark.skipif(not SHARED_SQUAD.is_dir(), reason=f"no SQuAD data at {SHARED_SQUAD}")
@pytest.mark.parametrize(
    "name, questions, impossible",
    [("dev-v1.1.json", 10_570, 0), ("dev-v2.0-half.json", 6_078, 3_168), ("train-v2.0-subset.json", 5_147, 348)],
)
def test_real_files(name, questions, impossible):
    data = squad.read_squad(SHARED_SQUAD / name)
    assert len(data.examples) == questions
    assert sum(ex.is_impossible for ex in data.examples) == impossible
    assert all(ex.answer_texts for ex in data.examples if not ex.is_impossible)
    assert data.mismatched_answer_ids == ()
