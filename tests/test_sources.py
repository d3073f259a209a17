"""Data in every layout: flat .jsonl/.json/.csv/.parquet files read as the
official JSON of the same questions, renamed columns, bad rows refused (or
skipped) in one line naming the file, row and field, hub names that neither
the cache nor the network has, the official metric on flat data, and
`jaxqa data convert` both ways."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from squad_fixture import SHARED_SQUAD
from test_train import flags, losses, run

from jaxqa import cli, train
from jaxqa.squad import features, layouts, metric, sources
from jaxqa.squad.examples import read_squad
from jaxqa.squad.features import FeatureSettings
from jaxqa.squad.tokenizer import load_tokenizer

FORMATS = (".jsonl", ".json", ".csv", ".parquet")
WINDOWS = FeatureSettings(64, 16, 16)


def flat_file(official: Path, out: Path, head: int = 0) -> Path:
    """The questions of an official SQuAD file (its first `head`; 0: all) as a
    flat file in `out`'s layout (a `.json` out: a JSON array of rows)."""
    rows = list(layouts.rows_of_document(json.loads(official.read_bytes())))[: head or None]
    if out.suffix == ".json":
        out.write_text(json.dumps(rows))
    else:
        layouts.write(rows, out)
    return out


@pytest.mark.parametrize("suffix", FORMATS)
def test_each_flat_format_reads_and_featurizes_as_the_official_json(squad, tmp_path, suffix):
    official = read_squad(squad)
    flat = sources.read(str(flat_file(squad, tmp_path / f"rows{suffix}")))
    assert flat.examples == official.examples
    tokenizer = load_tokenizer(squad.parent)
    ours, theirs = (
        features.featurize_train(flat.examples, tokenizer, WINDOWS),
        features.train_features(official, tokenizer, WINDOWS, tmp_path / "cache"),
    )
    for name, array in vars(theirs).items():
        np.testing.assert_array_equal(getattr(ours, name), array, err_msg=name)
    predictions = {ex.id: ex.answer_texts[0] for ex in flat.examples}
    assert metric.compute(flat.articles, predictions) == metric.compute(official.articles, predictions)


@pytest.mark.skipif(not SHARED_SQUAD.is_dir(), reason=f"no SQuAD data at {SHARED_SQUAD}")
@pytest.mark.parametrize("name", ["dev-v1.1.json", "dev-v2.0-half.json"])
def test_real_questions_in_each_format_are_the_official_ones(tmp_path, name):
    official = read_squad(SHARED_SQUAD / name).head(300)
    for suffix in FORMATS:
        flat = sources.read(str(flat_file(SHARED_SQUAD / name, tmp_path / f"rows{suffix}", head=300)))
        assert flat.examples == official.examples, suffix
        assert [ex.is_impossible for ex in flat.examples] == [ex.is_impossible for ex in official.examples]


def test_a_json_file_is_told_official_or_flat_by_its_content(squad, tmp_path):
    pretty = tmp_path / "pretty.json"
    pretty.write_text(json.dumps(json.loads(squad.read_text()), indent=2))
    lines = flat_file(squad, tmp_path / "lines.jsonl")
    (tmp_path / "lines.json").write_bytes(lines.read_bytes())  # JSON Lines under .json
    assert sources.is_official(squad) and sources.is_official(pretty)
    assert not sources.is_official(flat_file(squad, tmp_path / "rows.json"))
    assert not sources.is_official(tmp_path / "lines.json")
    assert sources.read(str(tmp_path / "lines.json")).examples == read_squad(squad).examples


RENAMED = {"question": "q", "context": "passage", "answers": "gold", "id": "qid"}
COLUMN_FLAGS = [
    *("--question-column-name", "q", "--context-column-name", "passage"),
    *("--answer-column-name", "gold", "--id-column-name", "qid"),
]


def renamed_file(squad: Path, out: Path) -> Path:
    rows = [
        {RENAMED.get(k, k): v for k, v in row.items()}
        for row in layouts.rows_of_document(json.loads(squad.read_bytes()))
    ]
    layouts.write(rows, out)
    return out


def test_renamed_columns_read_with_the_mapping_and_are_named_without_it(squad, tmp_path):
    path = str(renamed_file(squad, tmp_path / "renamed.parquet"))
    assert sources.read(path, columns=sources.Columns(**RENAMED)).examples == read_squad(squad).examples
    with pytest.raises(sources.SourceError) as error:
        sources.read(path)
    assert "no column 'question' (--question-column-name)" in str(error.value) and path in str(error.value)


def rows_file(tmp_path: Path, rows: list[dict]) -> Path:
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def good(id: str = "q-1", **changes) -> dict:
    row = {
        "id": id,
        "title": "France",
        "context": "Paris is the capital of France.",
        "question": "What is the capital?",
        "answers": {"text": ["Paris"], "answer_start": [0]},
    }
    return {**row, **changes}


FAULTS = [
    ([good(), good("q-2", answers={"text": ["Paris"], "answer_start": [3]})], "row 2: 'answers': answer_start 3"),
    ([good(), good("q-2", question=None)], "row 2: 'question': must be a string, got NoneType None"),
    ([good("q-1", context=7), good("q-2")], "row 1: 'context': must be a string, got int 7"),
    ([good("q-1", answers={"text": ["Paris", "France"], "answer_start": [0]})], "row 1: 'answers': 2 texts but 1"),
    ([good("q-1"), good("q-2"), good("q-1")], "row 3: 'id': 'q-1' is also the id of row 1"),
]


@pytest.mark.parametrize("rows, message", FAULTS)
def test_each_bad_row_is_refused_in_one_line_naming_file_row_and_field(squad, tmp_path, capsys, rows, message):
    path = rows_file(tmp_path, rows)
    args = [*flags(squad, "bert", tmp_path / "run"), "--train-file", str(path)]
    assert train.main(args) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"jaxqa.train: error: --train-file: {path}: {message}"), err
    assert "--skip-bad-rows" in err and not (tmp_path / "run").exists()


def test_an_empty_file_is_refused(tmp_path):
    for name in ("empty.jsonl", "empty.parquet", "empty.json"):
        (tmp_path / name).write_text("")
        with pytest.raises(sources.SourceError, match=f"{tmp_path / name}: empty file"):
            sources.read(str(tmp_path / name))
    (tmp_path / "blank.jsonl").write_text("\n\n")
    with pytest.raises(sources.SourceError, match="blank.jsonl: cannot be read as jsonl"):
        sources.read(str(tmp_path / "blank.jsonl"))


def test_skipped_bad_rows_are_counted_and_named(tmp_path, caplog):
    rows = [good("q-1"), good("q-2", question=5), good("q-3"), good("q-1"), good("q-5", context="")]
    with caplog.at_level("WARNING", logger="jaxqa.squad"):
        data = sources.read(str(rows_file(tmp_path, rows)), skip_bad_rows=True)
    assert [ex.id for ex in data.examples] == ["q-1", "q-3"]
    assert "skipped 3 bad rows (rows 2, 4, 5)" in caplog.text
    assert "row 2: 'question': must be a string" in caplog.text


def test_a_csv_keeps_ids_and_empty_titles_as_written(tmp_path):
    rows = [good("007", title=""), good("8", question="Which city?")]
    path = tmp_path / "rows.csv"
    layouts.write(rows, path)
    data = sources.read(str(path))
    assert [(ex.id, ex.title) for ex in data.examples] == [("007", ""), ("8", "France")]


def test_unanswerable_rows_have_an_empty_answer_list(tmp_path):
    rows = [good(), good("q-2", question="Who?", answers={"text": [], "answer_start": []})]
    data = sources.read(str(rows_file(tmp_path, rows)))
    assert [ex.is_impossible for ex in data.examples] == [False, True]


def hub_read(tmp_path: Path, env: dict) -> tuple[subprocess.CompletedProcess, float]:
    code = "from jaxqa.squad import sources\nsources.read('someone/not-cached-qa', 'validation')"
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "empty"), "HF_HOME": str(tmp_path / "hf"), **env}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    return done, time.perf_counter() - started


@pytest.mark.parametrize(
    "env, reason",
    [
        ({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}, "HF_HUB_OFFLINE is set"),
        # A hub that refuses connections (a closed local port): one look, no retries.
        (
            {"HF_HUB_OFFLINE": "", "HF_DATASETS_OFFLINE": "", "HF_ENDPOINT": "http://127.0.0.1:9"},
            "the hub cannot give it",
        ),
    ],
)
def test_a_hub_dataset_neither_cached_nor_reachable_fails_at_once(tmp_path, env, reason):
    done, seconds = hub_read(tmp_path, env)
    assert done.returncode != 0 and "SourceError: someone/not-cached-qa: not in the local datasets cache" in done.stderr
    assert reason in done.stderr
    assert seconds < 20  # the hub client's five retries alone wait 23 s


def test_the_metric_scores_flat_data_as_the_official_json(squad, tmp_path, capsys):
    predictions = {ex.id: ex.answer_texts[0] if i % 3 else "nothing" for i, ex in enumerate(read_squad(squad).examples)}
    (tmp_path / "predictions.json").write_text(json.dumps(predictions))
    scores = []
    for data in (squad, flat_file(squad, tmp_path / "rows.jsonl"), flat_file(squad, tmp_path / "rows.csv")):
        assert metric.main([str(data), str(tmp_path / "predictions.json")]) == 0
        scores.append(json.loads(capsys.readouterr().out))
    assert scores[0] == scores[1] == scores[2] and 0 < scores[0]["exact"] < 100


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_convert_goes_to_flat_and_back_to_the_same_json(squad_v2, tmp_path, capsys, suffix):
    flat, back = tmp_path / f"rows{suffix}", tmp_path / "back.json"
    assert cli.main(["data", "convert", str(squad_v2), str(flat)]) == 0
    assert cli.main(["data", "convert", str(flat), str(back)]) == 0
    # The official files' spelling of the version ("1.1", "v2.0"), where the fixture writes "2.0".
    assert json.loads(back.read_text()) == {**json.loads(squad_v2.read_text()), "version": "v2.0"}
    assert "written to" in capsys.readouterr().out


def test_convert_refuses_in_one_line_and_writes_nothing(tmp_path, capsys):
    bad = rows_file(tmp_path, [good(), good("q-2", question=None)])
    assert cli.main(["data", "convert", str(bad), str(tmp_path / "out.json")]) == 2
    assert cli.main(["data", "convert", str(bad), str(tmp_path / "out.txt")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "row 2: 'question'" in err[0] and "out.txt: OUT must end in .json" in err[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_SQUAD.is_dir(), reason=f"no SQuAD data at {SHARED_SQUAD}")
def test_dev_goes_to_jsonl_and_back_to_the_same_json(tmp_path):
    source = SHARED_SQUAD / "dev-v1.1.json"
    assert layouts.main([str(source), str(tmp_path / "dev.jsonl")]) == 0
    assert layouts.main([str(tmp_path / "dev.jsonl"), str(tmp_path / "dev.json")]) == 0
    assert json.loads((tmp_path / "dev.json").read_bytes()) == json.loads(source.read_bytes())


@pytest.mark.slow
def test_each_format_and_renamed_columns_train_to_the_same_losses(squad, tmp_path):
    runs = {"official": flags(squad, "bert", tmp_path / "official", "--max-steps", "3")}
    for suffix in FORMATS:
        path = flat_file(squad, tmp_path / f"rows{suffix}")
        runs[suffix] = flags(squad, "bert", tmp_path / suffix, "--max-steps", "3", "--train-file", str(path))
    renamed = renamed_file(squad, tmp_path / "renamed.jsonl")
    runs["renamed"] = [*flags(squad, "bert", tmp_path / "renamed", "--max-steps", "3"), "--train-file", str(renamed)]
    runs["renamed"] += COLUMN_FLAGS
    run(["-c", f"from jaxqa import train\nfor args in {list(runs.values())!r}:\n    assert train.main(args) == 0"])
    reference = losses(tmp_path / "official")
    assert len(reference) == 3 and all(np.isfinite(reference))
    for name in [*FORMATS, "renamed"]:
        assert losses(tmp_path / name) == reference, name


MEASURE = """
import json, resource, sys
from jaxqa.squad import features, sources
from jaxqa.squad.features import FeatureSettings
from jaxqa.squad.tokenizer import load_tokenizer

def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

tokenizer = load_tokenizer(sys.argv[2])
data = sources.read(sys.argv[1])
read = peak_mb()
made = features.featurize_train(data.examples, tokenizer, FeatureSettings(384, 128, 64))
print(json.dumps({"read_mb": read, "peak_mb": peak_mb(), "windows": len(made.input_ids),
                  "features_mb": sum(a.nbytes for a in vars(made).values()) / 2**20}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_SQUAD.is_dir(), reason=f"no SQuAD data at {SHARED_SQUAD}")
def test_a_parquet_file_of_100k_rows_featurizes_in_bounded_memory_with_a_progress_bar(squad, tmp_path):
    # Ten copies of dev, each context its own (a prefix shifts the answers), so that 20,670 contexts are distinct.
    rows = list(layouts.rows_of_document(json.loads((SHARED_SQUAD / "dev-v1.1.json").read_bytes())))
    copies = []
    for copy in range(10):
        prefix = f"Copy {copy}. "
        for row in rows:
            starts = [start + len(prefix) for start in row["answers"]["answer_start"]]
            answers = {"text": row["answers"]["text"], "answer_start": starts}
            copies.append({**row, "id": f"{row['id']}-{copy}", "context": prefix + row["context"], "answers": answers})
    layouts.write(copies[:100_000], tmp_path / "rows.parquet")
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(tmp_path / "rows.parquet"), str(squad.parent)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    measured = json.loads(done.stdout)
    assert measured["windows"] > 100_000
    # The windows made (447 MB here), held twice at most while joined, and one
    # chunk's work: featurising all at once grows by 1.5 GB, chunk by chunk by 0.9 GB.
    assert measured["peak_mb"] - measured["read_mb"] < 2 * measured["features_mb"] + 150, measured
    assert "reading" in done.stderr and "100000/100000" in done.stderr  # the progress bars
