"""The model `jaxqa.train` writes, taken as it is by `jaxqa.evaluate`, the
pipeline and `convert/flax2pt.py`."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

import jaxqa
from jaxqa import evaluate, predict, train
from jaxqa.models.encoder import SpanModel
from jaxqa.squad.decode import Predictions

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(squad_v2, tmp_path_factory) -> tuple[Path, Path]:
    """(SQuAD 2.0 fixture file, the final model of a 2-step tiny BERT run on it)."""
    squad = squad_v2
    run_dir = tmp_path_factory.mktemp("run")
    assert (
        train.main(
            [
                "--model",
                "bert",
                "--config",
                "bert:tiny",
                "--tokenizer",
                str(squad.parent),
                "--train-file",
                str(squad),
                "--eval-file",
                str(squad),
                "--batch-size",
                "8",
                "--max-steps",
                "2",
                "--run-dir",
                str(run_dir),
            ]
        )
        == 0
    )
    return squad, run_dir / "model"


@pytest.fixture(scope="module")
def untrained(squad_v2, tmp_path_factory) -> tuple[Path, Path]:
    """(SQuAD 2.0 fixture file, a randomly initialised tiny BERT with its vocabulary), made without training."""
    import jax
    from flax import linen as nn

    from jaxqa import models
    from jaxqa.models import bert

    squad = squad_v2
    config = bert.SIZES["tiny"]
    params = nn.unbox(models.init_params(SpanModel(config), jax.random.key(0)))
    folder = jaxqa.save_pretrained(tmp_path_factory.mktemp("untrained") / "model", "bert", config, params, squad.parent)
    return squad, folder


def test_windows_longer_than_the_position_table_are_refused(untrained, tmp_path, capsys):
    squad, model = untrained
    assert jaxqa.load_pretrained(model).config.max_position_embeddings == 512
    assert (
        evaluate.main(
            [
                "--checkpoint",
                str(model),
                "--data",
                str(squad),
                "--out-dir",
                str(tmp_path / "eval"),
                "--max-seq-length",
                "1024",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "--max-seq-length 1024: the model has positions for at most 512 tokens" in err and err.count("\n") == 1
    assert (
        predict.main(["--checkpoint", str(model), "--question", "Who?", "--context", "Ada.", "--max-seq-len", "1024"])
        == 2
    )
    out, err = capsys.readouterr()
    assert out == "" and "--max-seq-len 1024: the model has positions for at most 512" in err and err.count("\n") == 1
    with pytest.raises(jaxqa.Error, match="^max_seq_len 1024: the model has positions for at most 512"):
        jaxqa.pipeline(model, max_seq_len=1024)
    assert jaxqa.pipeline(model, max_seq_len=512).settings.max_seq_length == 512


def test_the_pipeline_and_predict_default_to_what_a_short_position_table_holds(squad_v2, tmp_path, capsys):
    import dataclasses

    import jax
    from flax import linen as nn

    from jaxqa import models
    from jaxqa.models import bert

    config = dataclasses.replace(bert.SIZES["tiny"], max_position_embeddings=128)
    params = nn.unbox(models.init_params(SpanModel(config), jax.random.key(0)))
    model = jaxqa.save_pretrained(tmp_path / "model", "bert", config, params, squad_v2.parent)
    qa = jaxqa.pipeline(model, precision="fp32")
    assert (qa.settings.max_seq_length, qa.settings.doc_stride) == (128, 64)
    # The arguments named as the caller spells them.
    with pytest.raises(jaxqa.Error, match="not more than doc_stride=16; lower max_question_len or doc_stride$"):
        qa(
            question="where does the tower of gondor stand " * 3,
            context="The tower stands. " * 9,
            max_seq_len=32,
            doc_stride=16,
        )
    assert predict.main(["--checkpoint", str(model), "--question", "Who?", "--context", "Ada wrote it."]) == 0
    assert "answer" in json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("where", ["file", "inside a file"])
def test_out_dir_is_checked_before_the_model_is_loaded(tmp_path, capsys, where):
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    out_dir = taken if where == "file" else taken / "eval"
    # The checkpoint does not exist: the --out-dir error comes first.
    assert (
        evaluate.main(
            [
                "--checkpoint",
                str(tmp_path / "nowhere"),
                "--data",
                str(tmp_path / "nothing.json"),
                "--out-dir",
                str(out_dir),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith(f"jaxqa.evaluate: error: --out-dir {out_dir}: ") and err.count("\n") == 1
    assert taken.read_text() == "not a folder"


@pytest.mark.slow
def test_evaluate_writes_the_official_files_and_metrics(trained, tmp_path):
    squad, model = trained
    out = tmp_path / "eval"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "jaxqa.evaluate",
            "--checkpoint",
            str(model),
            "--data",
            str(squad),
            "--out-dir",
            str(out),
            "--max-seq-length",
            "64",
            "--doc-stride",
            "16",
            "--max-query-length",
            "16",
            "--null-score-diff-threshold",
            "best",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads(result.stdout)
    ids = {
        qa["id"] for article in json.loads(squad.read_text())["data"] for p in article["paragraphs"] for qa in p["qas"]
    }
    predictions = json.loads((out / "predictions.json").read_text())
    null_odds = json.loads((out / "null_odds.json").read_text())
    assert set(predictions) == ids and set(null_odds) == ids
    assert metrics["total"] == len(ids) and {"HasAns_f1", "NoAns_f1", "best_f1", "best_f1_thresh"} <= set(metrics)
    # The tuned threshold was applied: the reported F1 is the best one.
    assert metrics["f1"] == pytest.approx(metrics["best_f1"])
    # The same predictions scored by the drop-in metric command give the same numbers.
    scored = subprocess.run(
        [
            sys.executable,
            "-m",
            "jaxqa.squad.metric",
            str(squad),
            str(out / "predictions.json"),
            "--na-prob-file",
            str(out / "null_odds.json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert json.loads(scored.stdout)["f1"] == pytest.approx(metrics["f1"])


def test_pipeline_takes_the_trained_model(trained):
    _, model = trained
    context = "The tower of gondor stands near ithil."
    answer = jaxqa.pipeline(model)(question="Where does the tower of gondor stand?", context=context)
    assert answer["answer"] == context[answer["start"] : answer["end"]] and 0 <= answer["score"] <= 1


def test_flax2pt_exports_the_trained_model(trained, tmp_path):
    transformers = pytest.importorskip("transformers", reason="the export is checked by loading it in transformers")
    _, model = trained
    spec = importlib.util.spec_from_file_location("flax2pt", ROOT / "convert" / "flax2pt.py")
    flax2pt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(flax2pt)
    assert flax2pt.main([str(model), str(tmp_path / "hf")]) == 0
    _, info = transformers.AutoModelForQuestionAnswering.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]


def test_repeated_evaluations_compile_once(trained):
    """Evaluations during training reuse the compiled forward pass."""
    import jax

    from jaxqa import evaluate, sharding
    from jaxqa.engine import Compiled
    from jaxqa.squad.examples import read_squad
    from jaxqa.squad.features import FeatureSettings, featurize_eval

    squad, model = trained
    model = jaxqa.load_pretrained(model)
    examples = read_squad(squad).examples
    features = featurize_eval(examples, model.tokenizer, FeatureSettings(64, 16, 16))
    mesh = sharding.make_mesh(sharding.parse_mesh(None, jax.device_count()))
    runs = lambda: evaluate.engine(Compiled(model.module, model.params, mesh), 64, 8)  # as each evaluation makes it
    first = evaluate.answer(runs(), examples, features, True, 0.0)
    forward = runs().runtime.forward
    compiled = forward.traces
    assert compiled >= 1  # the very function `answer` ran
    again = evaluate.answer(runs(), examples, features, True, 0.0)
    assert again.answers == first.answers
    assert forward.traces == compiled


def _articles(*qas) -> list[dict]:
    """One article, one paragraph; each qa is (id, [gold texts])."""
    questions = [
        {
            "id": qid,
            "question": "?",
            "answers": [{"text": t, "answer_start": 0} for t in golds],
            "is_impossible": not golds,
        }
        for qid, golds in qas
    ]
    return [{"title": "t", "paragraphs": [{"context": "c", "qas": questions}]}]


@pytest.mark.parametrize(
    "answers, null_odds, applied",
    [
        # Every null odds value is negative and every answer wrong: answering
        # nothing is best, for which the official search reports 0.0.
        (
            {"a1": "x", "a2": "y", "a3": "z", "n1": "u", "n2": "v"},
            {"a1": -5.0, "a2": -4.0, "a3": -3.0, "n1": -2.0, "n2": -1.0},
            -math.inf,
        ),
        # Best at a negative value; as answered with threshold 0, a4 (odds 2) is "".
        (
            {"a1": "Ada", "n1": "u", "a2": "y", "a4": "", "n2": ""},
            {"a1": -3.0, "n1": -2.0, "a2": -1.0, "a4": 2.0, "n2": math.inf},
            -3.0,
        ),
        # A gold answer that normalises to nothing ("the") is matched by "": best past 0.
        (
            {"a1": "Ada", "n1": "", "a6": "", "a2": "", "n2": ""},
            {"a1": -3.0, "n1": -2.0, "a6": 2.0, "a2": 4.0, "n2": math.inf},
            2.0,
        ),
    ],
)
def test_best_threshold_reaches_the_reported_best_f1(answers, null_odds, applied):
    golds = {"a1": ["Ada"], "a2": ["Al"], "a3": ["Di"], "a4": ["Bo"], "a6": ["the"], "n1": [], "n2": []}
    articles = _articles(*((qid, golds[qid]) for qid in answers))
    predictions = Predictions(answers, null_odds, {})
    reported = evaluate.score(articles, predictions, with_negatives=True)
    tuned, threshold = evaluate.apply_best_threshold(articles, predictions)
    assert threshold == applied
    assert tuned.answers == {qid: "" if null_odds[qid] > applied else text for qid, text in answers.items()}
    again = evaluate.score(articles, tuned, with_negatives=True)
    assert again["f1"] == reported["best_f1"] == again["best_f1"]


def test_a_loaded_model_its_pipeline_and_evaluation_compile_each_shape_once(untrained):
    import jax
    import numpy as np

    from jaxqa import models, sharding
    from jaxqa.engine import Compiled
    from jaxqa.squad.examples import read_squad
    from jaxqa.squad.features import FeatureSettings, featurize_eval

    squad, folder = untrained
    models.forward.cache_clear()  # no program of this module compiled yet
    model = jaxqa.load_pretrained(folder)
    examples = read_squad(squad).examples
    features = featurize_eval(examples, model.tokenizer, FeatureSettings(64, 16, 16))
    mesh = sharding.make_mesh(sharding.parse_mesh(None, 1))
    runs = evaluate.engine(Compiled(model.module, model.params, mesh), 64, 8, length_step=0)
    evaluate.answer(runs, examples, features, False, 0.0)
    assert model.forward.traces == 1  # every batch padded to 8 x 64
    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, seconds, **_: compiles.append(event) if event.endswith("backend_compile_duration") else None
    )
    ids = np.zeros((8, 64), np.int32)
    jax.block_until_ready(model(ids, ids, ids))
    jaxqa.pipeline(model, max_seq_len=64, seq_buckets=[64], batch_size=8, precision="fp32").warm_up(batch_buckets=[8])
    assert model.forward.traces == 1 and compiles == []


def test_a_runs_model_is_cut_into_the_runs_windows(untrained, tmp_path, capsys):
    import shutil

    squad, model = untrained
    run = tmp_path / "run"
    shutil.copytree(model, run / "model")
    recorded = {"max_seq_length": 64, "doc_stride": 16, "max_query_length": 16, "learning_rate": 0.001}
    (run / "run.json").write_text(json.dumps({"model_type": "bert", "settings": recorded}))
    common = ["--data", str(squad), "--precision", "fp32", "--max-eval-examples", "12"]
    assert evaluate.main(["--checkpoint", str(run / "model"), "--out-dir", str(tmp_path / "a"), *common]) == 0
    said = capsys.readouterr().err
    assert (
        f"the run's windows, from {run / 'run.json'}: --max-seq-length 64, --doc-stride 16, --max-query-length 16"
        in said
    )
    windows = ["--max-seq-length", "64", "--doc-stride", "16", "--max-query-length", "16"]
    assert evaluate.main(["--checkpoint", str(model), "--out-dir", str(tmp_path / "b"), *common, *windows]) == 0
    capsys.readouterr()
    predictions = [json.loads((tmp_path / name / "predictions.json").read_text()) for name in "ab"]
    assert predictions[0] == predictions[1] and len(predictions[0]) == 12  # --max-eval-examples: the first 12
    # A flag given wins over the run's value.
    assert (
        evaluate.main(
            ["--checkpoint", str(run / "model"), "--out-dir", str(tmp_path / "c"), *common, "--doc-stride", "8"]
        )
        == 0
    )
    said = capsys.readouterr().err
    assert "--max-seq-length 64, --max-query-length 16" in said and "--doc-stride 16" not in said


def test_the_default_out_dir_is_named_after_the_data(untrained, tmp_path, monkeypatch, capsys):
    squad, model = untrained
    monkeypatch.chdir(tmp_path)
    args = ["--checkpoint", str(model), "--data", str(squad), "--max-seq-length", "64", "--doc-stride", "16"]
    args += ["--max-eval-examples", "3"]
    assert evaluate.main(args) == 0
    assert json.loads(capsys.readouterr().out)["total"] == 3
    assert len(json.loads((tmp_path / "eval" / squad.stem / "predictions.json").read_text())) == 3
    assert evaluate.main([*args, "--max-eval-examples", "-1"]) == 2
    assert "--max-eval-examples -1: 0 (all) or a number of questions" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--batch-size", "0"], "--batch-size 0: must be at least 1"),
        (["--batch-size", "-8"], "--batch-size -8: must be at least 1"),
        (["--max-query-length", "0"], "--max-query-length 0: must be at least 1"),
        (["--max-seq-len", "4"], "--max-seq-length 4: must be at least 8"),
        (["--doc-stride", "384"], "--doc-stride 384: must be at least 0 and below --max-seq-length 384"),
        (["--null-score-diff-threshold", "nan"], "--null-score-diff-threshold nan: must be finite"),
        (["--null-score-diff-threshold", "high"], "--null-score-diff-threshold 'high': a number or 'best'"),
        (["--length-step", "-1"], "--length-step -1"),
    ],
)
def test_evaluate_checks_its_settings_as_train_does(untrained, tmp_path, capsys, extra, message):
    squad, model = untrained
    args = ["--checkpoint", str(model), "--data", str(squad), "--out-dir", str(tmp_path / "eval"), *extra]
    assert evaluate.main(args) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"jaxqa.evaluate: error: {message}") and err.count("\n") == 1
    assert not (tmp_path / "eval").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            ["--doc-stride", "400", "--max-seq-len", "384"],
            "--doc-stride 400: must be at least 0 and below --max-seq-len 384",
        ),
        (["--max-seq-length", "4"], "--max-seq-len 4: must be at least 8"),
        (["--batch-size", "0"], "--batch-size 0: must be at least 1"),
    ],
)
def test_predict_names_its_flags(untrained, capsys, extra, message):
    _, model = untrained
    assert predict.main(["--checkpoint", str(model), "--question", "Who?", "--context", "Ada.", *extra]) == 2
    out, err = capsys.readouterr()
    assert out == "" and message in err and err.count("\n") == 1


def test_a_full_disk_keeps_the_earlier_predictions_and_says_so_in_one_line(untrained, tmp_path, capsys, monkeypatch):
    import errno
    import os

    from jaxqa import errors

    squad, model = untrained
    out = tmp_path / "eval"
    out.mkdir()
    (out / "predictions.json").write_text('{"earlier": "run"}')

    replace = os.replace

    def full(source, destination):  # the disk fills as predictions.json is written
        if os.path.basename(destination) == "predictions.json":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(destination))
        replace(source, destination)

    monkeypatch.setattr(errors.os, "replace", full)
    args = ["--checkpoint", str(model), "--data", str(squad), "--out-dir", str(out), "--precision", "fp32"]
    assert evaluate.main(args) == 2
    out_text, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if "error" in line]  # besides the progress lines
    assert out_text == "" and len(errors) == 1 and "Traceback" not in err, err
    assert f"{out / 'predictions.json'}: cannot write the file (No space left on device)" in errors[0]
    assert (out / "predictions.json").read_text() == '{"earlier": "run"}'
    assert sorted(p.name for p in out.iterdir()) == ["predictions.json"]  # no temporary left


def test_flat_data_with_renamed_columns_evaluates_as_the_official_json(untrained, tmp_path, capsys):
    from jaxqa.squad import layouts

    squad, model = untrained
    renamed = {"id": "qid", "question": "q"}
    rows = [
        {renamed.get(k, k): v for k, v in row.items()}
        for row in layouts.rows_of_document(json.loads(squad.read_text()))
    ]
    layouts.write(rows, tmp_path / "rows.parquet")
    common = ["--checkpoint", str(model), "--max-seq-length", "64", "--doc-stride", "16", "--max-query-length", "16"]
    assert evaluate.main([*common, "--data", str(squad), "--out-dir", str(tmp_path / "official")]) == 0
    official = json.loads(capsys.readouterr().out)
    flat = ["--data", str(tmp_path / "rows.parquet"), "--id-column-name", "qid", "--question-column-name", "q"]
    assert evaluate.main([*common, *flat, "--out-dir", str(tmp_path / "flat")]) == 0
    assert json.loads(capsys.readouterr().out) == official and "NoAns_total" in official
    for name in ("predictions.json", "null_odds.json"):
        assert (tmp_path / "flat" / name).read_text() == (tmp_path / "official" / name).read_text()
    assert set(json.loads((tmp_path / "flat" / "predictions.json").read_text())) == {row["qid"] for row in rows}


def test_squad_2_scores_name_the_answerable_and_unanswerable_f1_and_answering_nothing_warns(
    untrained, tmp_path, capsys
):
    squad, model = untrained
    nothing = ["--null-score-diff-threshold", "-1000000"]  # every question's null odds exceed it: "" everywhere
    args = ["--checkpoint", str(model), "--data", str(squad), "--out-dir", str(tmp_path), "--precision", "fp32"]
    assert evaluate.main([*args, "--max-seq-length", "64", "--doc-stride", "32", *nothing]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    questions = len(json.loads((tmp_path / "predictions.json").read_text()))
    assert (result["HasAns_f1"], result["NoAns_f1"]) == (0.0, 100.0) and result["f1"] > 0
    assert f"WARNING: every one of the {questions} answers is empty (no answer)" in err, err
    summary = next(line for line in err.splitlines() if "features of" in line)
    assert summary.startswith(f"exact {result['exact']:.2f} f1 {result['f1']:.2f} HasAns_f1 0.00 NoAns_f1 100.00; ")
    # SQuAD 1.1 has no unanswerable questions: exact and F1 alone.
    assert evaluate.describe({"exact": 50.0, "f1": 62.5, "total": 4, "HasAns_f1": 62.5}) == "exact 50.00 f1 62.50"
