"""Tests for jaxqa.squad.metric: hand-checked cases, the command line, and agreement with a reference copy."""

import json
import os
import pathlib
import random
import subprocess
import sys
import types

import pytest
from squad_fixture import SHARED_SQUAD

from jaxqa.squad import metric

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _article(*qas):
    """One article, one paragraph; each qa is (id, [gold texts])."""
    return {
        "title": "t",
        "paragraphs": [
            {
                "context": "unused",
                "qas": [
                    {"id": qid, "question": "?", "answers": [{"text": t, "answer_start": 0} for t in golds]}
                    for qid, golds in qas
                ],
            }
        ],
    }


# ---------------------------------------------------------------- normalisation, EM, F1


@pytest.mark.parametrize(
    "raw, normalised",
    [
        ("The  Quick, brown FOX!", "quick brown fox"),  # case, punctuation, article, spaces
        ("an apple a day", "apple day"),
        ("theatre then", "theatre then"),  # articles only as whole words
        ("A-team", "ateam"),  # punctuation goes first, so "a" is no longer a word
        ("U.S.A.", "usa"),
        ("  \t\n ", ""),
        ("Über – café", "über – café"),  # only ASCII punctuation is removed
    ],
)
def test_normalize_answer(raw, normalised):
    assert metric.normalize_answer(raw) == normalised


def test_compute_exact():
    assert metric.compute_exact("The Denver Broncos", "denver broncos.") == 1
    assert metric.compute_exact("Denver Broncos", "Broncos") == 0
    assert metric.compute_exact("", "") == 1
    assert metric.compute_exact("", "the") == 1  # "the" normalises to nothing


def test_compute_f1_partial_overlap():
    # gold -> [cat, sat, on, mat], pred -> [cat, sat, quietly]: 2 shared tokens,
    # precision 2/3, recall 2/4 = 1/2, F1 = 2 * (1/3) / (7/6) = 4/7.
    assert metric.compute_f1("the cat sat on the mat", "Cat sat quietly") == pytest.approx(4 / 7)
    # Shared tokens are counted as a multiset: "to" twice in gold, three times in pred
    # gives 2 shared; precision 2/3, recall 2/6 = 1/3, F1 = 2 * (2/9) / 1 = 4/9.
    assert metric.compute_f1("to be or not to be", "to to to") == pytest.approx(4 / 9)
    assert metric.compute_f1("Denver Broncos", "Carolina Panthers") == 0.0
    assert metric.compute_f1("Denver Broncos", "the broncos, denver") == 1.0


def test_compute_f1_empty_sides():
    # An empty side is "no answer": 1 when both are empty, else 0.
    assert metric.compute_f1("", "") == 1.0
    assert metric.compute_f1("", "a the an") == 1.0
    assert metric.compute_f1("", "Denver") == 0.0
    assert metric.compute_f1("Denver", "") == 0.0


# ---------------------------------------------------------------- evaluate


def test_multiple_golds_take_the_max():
    dataset = [_article(("q", ["Santa Clara, California", "Levi's Stadium", "Santa Clara"]))]
    # Exact against the third gold; F1 would be 4/5 against the first alone.
    result = metric.compute(dataset, {"q": "santa clara"})
    assert result == {
        "exact": 100.0,
        "f1": 100.0,
        "total": 1,
        "HasAns_exact": 100.0,
        "HasAns_f1": 100.0,
        "HasAns_total": 1,
    }
    # "Levi Stadium": first gold shares nothing, second shares "stadium" only
    # ([levis, stadium] vs [levi, stadium]: precision 1/2, recall 1/2, F1 1/2).
    assert metric.compute(dataset, {"q": "Levi Stadium"})["f1"] == pytest.approx(50.0)


def test_unanswerable_gold():
    dataset = [_article(("empty", []), ("wrong", []))]
    result = metric.compute(dataset, {"empty": "", "wrong": "Denver"})
    assert list(result.items()) == [
        ("exact", 50.0),
        ("f1", 50.0),
        ("total", 2),
        ("NoAns_exact", 50.0),
        ("NoAns_f1", 50.0),
        ("NoAns_total", 2),
    ]


def test_gold_that_normalises_to_nothing_is_answerable_but_scores_as_empty():
    # The question has an answer list, so it is HasAns, but its only text is an
    # article, so the gold becomes "" and only an empty prediction matches.
    dataset = [_article(("q", ["The"]))]
    assert metric.compute(dataset, {"q": ""})["HasAns_exact"] == 100.0
    assert metric.compute(dataset, {"q": "the"})["HasAns_f1"] == 100.0
    assert metric.compute(dataset, {"q": "The End"})["HasAns_f1"] == 0.0


# q1, q2 answerable; q3, q4 unanswerable. Raw scores:
#   q1 "Denver Broncos" = gold                       EM 1, F1 1
#   q2 "Santa Clara" vs "Santa Clara California"     EM 0, F1: p 1, r 2/3 -> 4/5
#   q3 "Levi's Stadium" where there is no answer     EM 0, F1 0
#   q4 ""               where there is no answer     EM 1, F1 1
SMALL_V2 = [_article(("q1", ["Denver Broncos"]), ("q2", ["Santa Clara California"]), ("q3", []), ("q4", []))]
SMALL_PREDS = {"q1": "Denver Broncos", "q2": "Santa Clara", "q3": "Levi's Stadium", "q4": ""}
SMALL_NA_PROBS = {"q1": 0.1, "q2": 0.3, "q3": 0.6, "q4": 0.9}


def test_has_ans_no_ans_split():
    result = metric.compute(SMALL_V2, SMALL_PREDS)
    # exact (1+0+0+1)/4, f1 (1+0.8+0+1)/4; HasAns q1, q2; NoAns q3, q4.
    assert list(result) == [
        "exact",
        "f1",
        "total",
        "HasAns_exact",
        "HasAns_f1",
        "HasAns_total",
        "NoAns_exact",
        "NoAns_f1",
        "NoAns_total",
    ]
    expected = [50.0, 70.0, 4, 50.0, 90.0, 2, 50.0, 50.0, 2]
    assert list(result.values()) == pytest.approx(expected)


def test_na_prob_thresh_turns_confident_questions_into_no_answer():
    # Above 0.2 are q2, q3, q4, answered "": q2 scores 0, q3 and q4 score 1.
    result = metric.compute(SMALL_V2, SMALL_PREDS, SMALL_NA_PROBS, na_prob_thresh=0.2)
    assert [
        result[k] for k in ("exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1")
    ] == pytest.approx([75.0, 75.0, 50.0, 50.0, 100.0, 100.0])
    # At the default threshold 1.0 no probability counts; without na_probs there is no search.
    with_probs = metric.compute(SMALL_V2, SMALL_PREDS, SMALL_NA_PROBS)
    without = metric.compute(SMALL_V2, SMALL_PREDS)
    assert list(with_probs.items())[:9] == list(without.items()) and len(without) == 9


def test_best_thresholds_by_hand():
    # Walk in order of na_prob: q1 0.1, q2 0.3, q3 0.6, q4 0.9, starting from
    # "all no answer" = 2 (q3, q4 right). Each step answers one more question.
    #   EM: q1 +1 -> 3 (best, 0.1); q2 +0 -> 3 (not better); q3 -1 -> 2; q4 +0 -> 2.
    #   F1: q1 +1 -> 3 (best, 0.1); q2 +0.8 -> 3.8 (best, 0.3); q3 -1 -> 2.8; q4 -> 2.8.
    # So best_exact 3/4 at 0.1 and best_f1 3.8/4 at 0.3, against 50 and 70 untuned.
    result = metric.compute(SMALL_V2, SMALL_PREDS, SMALL_NA_PROBS)
    assert list(result)[-4:] == ["best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh"]
    assert result["best_exact"] == 75.0 and result["best_exact_thresh"] == 0.1
    assert result["best_f1"] == pytest.approx(95.0) and result["best_f1_thresh"] == 0.3
    # Applying the F1 threshold does reach the F1 it promised.
    assert metric.compute(SMALL_V2, SMALL_PREDS, SMALL_NA_PROBS, 0.3)["f1"] == pytest.approx(95.0)


def test_best_thresholds_walk_ties_in_dict_order():
    # qa (answerable, right) and qb (unanswerable, answered " ") share na_prob 0.5.
    # " " is exact for "no answer" (it normalises to ""), yet the search counts any
    # non-empty string as an answer. Start: 1 (qb right).
    dataset = [_article(("qa", ["x"]), ("qb", []))]
    preds = {"qa": "x", "qb": " "}
    # qa first: 1 + 1 = 2 -> best 2/2 at 0.5 (a score no threshold reaches: at 0.5
    # both are answered), then qb -1.
    first = metric.compute(dataset, preds, {"qa": 0.5, "qb": 0.5})
    assert (first["best_exact"], first["best_exact_thresh"]) == (100.0, 0.5)
    # qb first: 1 - 1 = 0, then qa +1 = 1, never above the start: 1/2 at 0.0.
    second = metric.compute(dataset, preds, {"qb": 0.5, "qa": 0.5})
    assert (second["best_exact"], second["best_exact_thresh"]) == (50.0, 0.0)


def test_best_f1_threshold_reaches_the_reported_best_f1():
    # Where answering something is best, it is the official threshold.
    assert metric.best_f1_threshold(SMALL_V2, SMALL_PREDS, SMALL_NA_PROBS) == 0.3
    # Null odds below 0 everywhere, and every answer wrong: "no answer" for all
    # is best (2 of 4). The official search reports its starting 0.0, which
    # would answer all four (F1 0); -inf answers none.
    preds = {"q1": "Carolina", "q2": "Miami", "q3": "Levi's Stadium", "q4": "x"}
    odds = {"q1": -4.0, "q2": -3.0, "q3": -2.0, "q4": -1.0}
    result = metric.compute(SMALL_V2, preds, odds)
    assert (result["best_f1"], result["best_f1_thresh"]) == (50.0, 0.0)
    assert metric.compute(SMALL_V2, preds, odds, 0.0)["f1"] == 0.0
    threshold = metric.best_f1_threshold(SMALL_V2, preds, odds)
    assert threshold == -float("inf")
    assert metric.compute(SMALL_V2, preds, odds, threshold)["f1"] == 50.0


def test_missing_prediction_is_warned_and_left_out(capsys):
    preds = {k: v for k, v in SMALL_PREDS.items() if k != "q3"}
    result = metric.compute(SMALL_V2, preds, {k: SMALL_NA_PROBS[k] for k in preds})
    assert capsys.readouterr().err == "Missing prediction for q3\n"
    without_q3 = [_article(("q1", ["Denver Broncos"]), ("q2", ["Santa Clara California"]), ("q4", []))]
    assert result == metric.compute(without_q3, preds, {k: SMALL_NA_PROBS[k] for k in preds})
    assert (result["total"], result["NoAns_total"]) == (3, 1)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="no question"):
        metric.compute(SMALL_V2, {"other": "x"})
    with pytest.raises(ValueError, match=r"1 question\(s\) have no no-answer probability, e.g. 'q4'"):
        metric.compute(SMALL_V2, SMALL_PREDS, {k: SMALL_NA_PROBS[k] for k in ("q1", "q2", "q3")})


# ---------------------------------------------------------------- command line


def _write(path, obj):
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return str(path)


def _cli(*args):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "jaxqa.squad.metric", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def small_files(tmp_path):
    return (
        _write(tmp_path / "data.json", {"version": "v2.0", "data": SMALL_V2}),
        _write(tmp_path / "pred.json", SMALL_PREDS),
        _write(tmp_path / "na_prob.json", SMALL_NA_PROBS),
    )


def test_cli_prints_and_writes_the_metrics(small_files, tmp_path, capsys):
    data, preds, na_probs = small_files
    expected = metric.compute(SMALL_V2, SMALL_PREDS, SMALL_NA_PROBS, 0.2)
    run = _cli(data, preds, "--na-prob-file", na_probs, "--na-prob-thresh", "0.2")
    assert run.returncode == 0, run.stderr
    assert run.stdout == json.dumps(expected, indent=2) + "\n"
    out = tmp_path / "eval.json"
    assert metric.main([data, preds, "-n", na_probs, "-t", "0.2", "--out-file", str(out)]) == 0
    assert capsys.readouterr().out == ""
    assert list(json.loads(out.read_text()).items()) == list(expected.items())


def test_cli_bad_input_exits_2_without_traceback(small_files, tmp_path):
    run = _cli(str(tmp_path / "nope.json"), small_files[1])
    assert (run.returncode, run.stdout) == (2, "")
    assert run.stderr.startswith("error: ") and "nope.json" in run.stderr and "Traceback" not in run.stderr
    assert len(run.stderr.splitlines()) == 1


# The other bad inputs run in-process (main returns the exit code), to keep the file fast.
@pytest.mark.parametrize(
    "bad, named",
    [
        ("data_not_json", "data.json"),
        ("data_not_squad", "data.json"),
        ("preds_not_strings", "pred.json"),
        ("preds_not_object", "pred.json"),
        ("na_probs_not_numbers", "na_prob.json"),
        ("na_probs_incomplete", "na_prob.json"),
    ],
)
def test_cli_bad_input(small_files, tmp_path, capsys, bad, named):
    data, preds, na_probs = small_files
    contents = {
        "data_not_json": "{not json",
        "data_not_squad": {"version": "v2.0"},
        "preds_not_strings": {"q1": 3},
        "preds_not_object": ["Denver"],
        "na_probs_not_numbers": {"q1": "0.5"},
        "na_probs_incomplete": {"q1": 0.5},
    }[bad]
    _write(tmp_path / named, contents)
    assert metric.main([data, preds, "--na-prob-file", na_probs]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and named in err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "data, message",
    [
        (
            [_article(("q1", ["Denver"])), {"title": "t", "paragraphs": [{"context": "c", "qas": [{"id": "q9"}]}]}],
            'article 1, paragraph 0, question 0 (id q9): no "answers" list',
        ),
        ([1, 2], 'article 0: no "paragraphs" list'),
        ([{"title": "t", "paragraphs": {"qas": []}}], 'article 0: no "paragraphs" list'),
        ([{"title": "t", "paragraphs": [{"context": "c", "qas": None}]}], 'article 0, paragraph 0: no "qas" list'),
        (
            [{"title": "t", "paragraphs": [{"context": "c", "qas": [{"id": 1, "answers": []}]}]}],
            'article 0, paragraph 0, question 0: no "id" string',
        ),
        (
            [{"title": "t", "paragraphs": [{"context": "c", "qas": [{"id": "q1", "answers": [{"answer": "x"}]}]}]}],
            'question 0 (id q1): an answer without a "text" string',
        ),
    ],
)
def test_cli_malformed_data_names_the_file(small_files, tmp_path, capsys, data, message):
    _write(tmp_path / "data.json", {"version": "v2.0", "data": data})
    assert metric.main(list(small_files[:2])) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"error: {small_files[0]}: article ") and message in err
    assert len(err.splitlines()) == 1


def test_cli_rejects_plots(small_files, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        metric.main([*small_files[:2], "--out-image-dir", str(tmp_path / "plots")])
    assert exit_info.value.code == 2 and "not supported" in capsys.readouterr().err


# ---------------------------------------------------------------- real SQuAD data


def _load_squad(name):
    path = SHARED_SQUAD / name
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return json.loads(path.read_text())["data"]


def _questions(dataset):
    for article in dataset:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                yield paragraph["context"], qa


def test_gold_predictions_score_100_on_dev_v1_1():
    dataset = _load_squad("dev-v1.1.json")
    preds = {qa["id"]: qa["answers"][0]["text"] for _, qa in _questions(dataset)}
    result = metric.compute(dataset, preds)
    assert result == {
        "exact": 100.0,
        "f1": 100.0,
        "total": 10570,
        "HasAns_exact": 100.0,
        "HasAns_f1": 100.0,
        "HasAns_total": 10570,
    }


def _synthetic_predictions(dataset, seed):
    """Seeded right, truncated, wrong, re-cased and empty answers, with tied no-answer probabilities."""
    rng = random.Random(seed)
    preds, na_probs = {}, {}
    for context, qa in _questions(dataset):
        golds = [a["text"] for a in qa["answers"] or qa.get("plausible_answers", [])]
        words = context.split()
        start = rng.randrange(len(words))
        choice = rng.randrange(6)
        if choice == 0 and golds:
            pred = golds[0]
        elif choice == 1 and golds:
            pred = " ".join(golds[0].split()[: max(1, len(golds[0].split()) // 2)])
        elif choice == 2 and golds:
            pred = f"The {golds[0].upper()}!"
        elif choice == 3:
            pred = " ".join(words[start : start + rng.randint(1, 6)])
        elif choice == 4:
            pred = rng.choice(["", " "])
        else:
            pred = ""
        preds[qa["id"]] = pred
        # Lower for answerable questions, so the best SQuAD 2.0 threshold lies inside
        # the range; two decimals give many ties, and a few are exact integers.
        low = 0.0 if qa["answers"] else 0.3
        na_prob = round(rng.uniform(low, low + 0.7), 2)
        na_probs[qa["id"]] = rng.choice([0, 1]) if rng.random() < 0.02 else na_prob
    # Predictions for questions not in the data are ignored by both.
    preds["not-a-question"], na_probs["not-a-question"] = "x", 0.5
    return preds, na_probs


@pytest.mark.parametrize("name", ["dev-v2.0-half.json", "dev-v1.1.json"])
def test_agrees_with_transformers_reference(name, tmp_path, capsys):
    reference = pytest.importorskip("transformers.data.metrics.squad_metrics")
    dataset = _load_squad(name)
    preds, na_probs = _synthetic_predictions(dataset, seed=0)
    # squad_evaluate reads only these two attributes of its examples.
    examples = [types.SimpleNamespace(qas_id=qa["id"], answers=qa["answers"]) for _, qa in _questions(dataset)]
    ours = metric.compute(dataset, preds, na_probs, na_prob_thresh=0.5)
    theirs = reference.squad_evaluate(examples, preds, na_probs, 0.5)
    assert list(ours.items()) == list(theirs.items())  # exact floats, same key order
    # Without probabilities the official script stops before the threshold search,
    # while the transformers copy searches over its all-zero defaults: compare the rest.
    ours = metric.compute(dataset, preds)
    theirs_without = reference.squad_evaluate(examples, preds)
    assert list(ours.items()) == [(k, v) for k, v in theirs_without.items() if not k.startswith("best_")]

    # The command line prints the same JSON, digit for digit (in-process, for speed).
    files = [_write(tmp_path / "data.json", {"data": dataset}), _write(tmp_path / "pred.json", preds)]
    assert metric.main([*files, "-n", _write(tmp_path / "na.json", na_probs), "-t", "0.5"]) == 0
    assert capsys.readouterr().out == json.dumps(theirs, indent=2) + "\n"
