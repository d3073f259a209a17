"""The runtime choice (`jaxqa.runtimes`): exports kept beside a checkpoint,
`auto` measuring XLA's precisions and those exports against XLA float32 and
choosing the fastest that agrees, its cache (hit, invalidated, corrupt,
unwritable), the runtimes asked by name and their refusals, and the choice as
predict, the pipeline's `info` and the server's /info say it.

Most tests stand a fake in for the timed probe (`runtimes.probe`): they choose
what each candidate's measurement says, and nothing here is timed."""

import json
import logging
import os
import re
import shutil

import pytest

pytest.importorskip("onnxruntime", reason="the exports measured are ONNX, the optional extra jaxqa[onnx]")

import jaxqa
from jaxqa import predict, runtimes
from jaxqa.export import write

ALL = {"xla fp32", "xla bf16", "xla int8", "onnx fp32", "onnx int8"}
RIGHT = [(f"answer {i}", i) for i in range(len(runtimes.PROBE))]
WRONG = [("elsewhere", 0), *RIGHT[1:]]


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    """Each test's cached choices go to a folder of its own, not the user's home."""
    monkeypatch.setenv("JAXQA_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def checkpoint(teacher, tmp_path_factory):
    """A copy of the teacher with ONNX exports in float32 and int8 beside it,
    written by `jaxqa export CKPT` with no OUT."""
    folder = tmp_path_factory.mktemp("beside") / "bert"
    shutil.copytree(teacher, folder)
    assert write.main([str(folder)]) == 0
    assert write.main([str(folder), "--precision", "int8"]) == 0
    return folder


@pytest.fixture
def own_checkpoint(checkpoint, tmp_path):
    """A copy of `checkpoint` that a test may change."""
    return shutil.copytree(checkpoint, tmp_path / "bert")


def fake_probe(monkeypatch, seconds: dict[str, float] | None = None, wrong: frozenset[str] = frozenset()):
    """Stands a probe in that takes `seconds[label]` (default 1.0) and answers
    RIGHT, or WRONG for the `wrong` labels; returns the labels it probed, in order."""
    probed = []

    def probe(qa, repeats=runtimes.REPEATS):
        label = f"{qa.model.runtime.name} {qa.precision}"
        probed.append(label)
        return (seconds or {}).get(label, 1.0), WRONG if label in wrong else RIGHT

    monkeypatch.setattr(runtimes, "probe", probe)
    return probed


def refuse_to_measure(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("measured again")

    monkeypatch.setattr(runtimes, "probe", refuse)
    monkeypatch.setattr(runtimes, "_answers", refuse)


def test_the_probe_is_a_passage_with_questions_answered_by_its_spans():
    assert 150 <= len(runtimes.PASSAGE.split()) <= 250
    assert len(runtimes.PROBE) == 8
    for _, answer in runtimes.PROBE:
        assert runtimes.PASSAGE.count(answer) >= 1, answer


def test_an_export_goes_beside_the_checkpoint_and_leaves_it_as_it_opens(checkpoint, teacher, capsys):
    assert {path.name: kind for path, kind in runtimes.exports_beside(checkpoint).items()} == {
        "onnx-fp32": ("onnx", "fp32"),
        "onnx-int8": ("onnx", "int8"),
    }
    with pytest.raises(SystemExit):
        write.main(["--help"])
    assert "CHECKPOINT/exports/FORMAT-PRECISION" in " ".join(capsys.readouterr().out.split())
    beside, plain = jaxqa.load_pretrained(checkpoint), jaxqa.load_pretrained(teacher)
    assert beside.config == plain.config and runtimes.exports_beside(teacher) == {}


def test_auto_measures_every_candidate_then_opens_the_cached_choice_alone(checkpoint, caplog):
    with caplog.at_level(logging.INFO, "jaxqa"):
        qa = jaxqa.pipeline(checkpoint, max_seq_len=64)
    info = qa.info
    assert set(info["measured"]) == ALL and info["cached"] is False
    assert info["measured"]["xla fp32"]["agrees"] is True
    chosen = next(label for label in ALL if info["why"].startswith(label + " ("))
    assert info["measured"][chosen]["agrees"] is True
    assert f"{info['runtime']} {info['precision']}" == chosen
    assert all(entry["seconds"] > 0 for entry in info["measured"].values())
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("runtime auto: ")]
    assert len(said) == 1 and re.search(r"ms per probe question.*8/8 answers agree", said[0]), said
    assert not [r for r in caplog.records if r.name == "jaxqa.squad.features"]  # the probe's windows say nothing
    assert len(json.loads(runtimes.cache_path().read_text())) == 1


def test_a_second_pipeline_reads_the_cache_without_measuring(checkpoint, monkeypatch):
    first = jaxqa.pipeline(checkpoint, max_seq_len=64)
    refuse_to_measure(monkeypatch)
    second = jaxqa.pipeline(checkpoint, max_seq_len=64)
    assert second.info["cached"] is True
    assert {**second.info, "cached": False} == first.info
    assert second(question="What shape are the cells?", context=runtimes.PASSAGE)["answer"]


def test_a_changed_file_or_setting_is_measured_again(own_checkpoint, monkeypatch):
    probed = fake_probe(monkeypatch)
    jaxqa.pipeline(own_checkpoint, max_seq_len=64)
    assert len(probed) == len(ALL)
    assert jaxqa.pipeline(own_checkpoint, max_seq_len=64).info["cached"] is True
    weights = own_checkpoint / "params.safetensors"
    later = weights.stat().st_mtime_ns + 10**9
    os.utime(weights, ns=(later, later))
    assert jaxqa.pipeline(own_checkpoint, max_seq_len=64).info["cached"] is False
    model = own_checkpoint / "exports" / "onnx-int8" / "model.onnx"
    os.utime(model, ns=(later, later))
    assert jaxqa.pipeline(own_checkpoint, max_seq_len=64).info["cached"] is False
    assert jaxqa.pipeline(own_checkpoint, max_seq_len=48).info["cached"] is False
    assert len(probed) == 4 * len(ALL)


def test_a_corrupt_cache_is_warned_of_and_measured_over(checkpoint, monkeypatch, caplog):
    probed = fake_probe(monkeypatch)
    path = runtimes.cache_path()
    path.parent.mkdir(parents=True)
    path.write_text("{ not json")
    with caplog.at_level(logging.WARNING, "jaxqa"):
        assert jaxqa.pipeline(checkpoint, max_seq_len=64).info["cached"] is False
    assert "cannot read the cached runtime choices" in caplog.text and len(probed) == len(ALL)
    assert len(json.loads(path.read_text())) == 1  # written anew, whole


def test_a_cache_that_cannot_be_written_is_only_warned_of(checkpoint, monkeypatch, tmp_path, caplog):
    fake_probe(monkeypatch)
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("JAXQA_CACHE_DIR", str(tmp_path / "a-file" / "cache"))
    with caplog.at_level(logging.WARNING, "jaxqa"):
        qa = jaxqa.pipeline(checkpoint, max_seq_len=64)
    assert qa.info["cached"] is False and "cannot cache the runtime choice" in caplog.text


def test_the_fastest_candidate_that_disagrees_is_not_chosen(checkpoint, monkeypatch):
    seconds = {"onnx int8": 0.001, "onnx fp32": 0.002, "xla fp32": 0.01}
    fake_probe(monkeypatch, seconds, wrong=frozenset({"onnx int8"}))
    info = jaxqa.pipeline(checkpoint, max_seq_len=64).info
    assert (info["runtime"], info["precision"]) == ("onnx", "fp32")
    assert info["measured"]["onnx int8"] == {"seconds": 0.001, "agrees": False}
    assert "7/8" not in info["why"] and "8/8 answers agree" in info["why"]
    runtimes.cache_path().unlink()
    fake_probe(monkeypatch, seconds, wrong=frozenset(ALL - {"xla fp32"}))
    info = jaxqa.pipeline(checkpoint, max_seq_len=64).info
    assert (info["runtime"], info["precision"]) == ("xla", "fp32")


def test_precision_restricts_the_candidates(checkpoint, monkeypatch):
    fake_probe(monkeypatch)
    for precision in ("fp32", "int8"):
        info = jaxqa.pipeline(checkpoint, max_seq_len=64, precision=precision).info
        assert set(info["measured"]) == {f"xla {precision}", f"onnx {precision}"}
        assert info["precision"] == precision
    refuse_to_measure(monkeypatch)
    info = jaxqa.pipeline(checkpoint, max_seq_len=64, precision="bf16").info
    assert (info["runtime"], info["precision"], info["measured"]) == ("xla", "bf16", {})
    assert "the only candidate in bf16" in info["why"]


def test_a_runtime_asked_by_name(checkpoint, monkeypatch):
    probed = fake_probe(monkeypatch)
    info = jaxqa.pipeline(checkpoint, max_seq_len=64, runtime="onnx").info
    assert set(info["measured"]) == {"onnx fp32", "onnx int8"} and probed[-2:] == ["onnx fp32", "onnx int8"]
    refuse_to_measure(monkeypatch)
    info = jaxqa.pipeline(checkpoint, max_seq_len=64, runtime="onnx", precision="int8").info
    assert info == {
        "runtime": "onnx",
        "precision": "int8",
        "folder": str(checkpoint / "exports" / "onnx-int8"),
        "why": "asked",
    }
    info = jaxqa.pipeline(checkpoint, max_seq_len=64, runtime="xla", precision="fp32").info
    assert (info["runtime"], info["folder"], info["why"], "measured" in info) == (
        "xla",
        str(checkpoint),
        "asked",
        False,
    )


def test_a_runtime_that_cannot_run_is_refused_in_one_line(checkpoint, teacher):
    export = checkpoint / "exports" / "onnx-fp32"
    cases = [
        (
            teacher,
            {"runtime": "onnx"},
            f"runtime onnx: no ONNX export in {teacher}/exports; make one with `jaxqa export {teacher} --format onnx`",
        ),
        (checkpoint, {"runtime": "litert"}, "runtime litert: no LiteRT export in "),
        (checkpoint, {"runtime": "onnx", "precision": "bf16"}, "runtime onnx: no ONNX export in bf16 in "),
        (export, {"runtime": "litert"}, f"runtime litert: {export} is an ONNX export, which runs under onnx only"),
        (export, {"runtime": "xla"}, "runtime xla: .* is an ONNX export"),
        (checkpoint, {"runtime": "tpu"}, "runtime 'tpu': choose one of auto, xla, onnx, litert"),
    ]
    for model, asked, message in cases:
        with pytest.raises(jaxqa.Error, match=re.escape(message) if "`" in message else message) as caught:
            jaxqa.pipeline(model, max_seq_len=64, **asked)
        assert "\n" not in str(caught.value)


def test_without_exports_a_checkpoint_runs_under_xla_as_before(teacher, monkeypatch):
    refuse_to_measure(monkeypatch)
    info = jaxqa.pipeline(teacher, max_seq_len=64, precision="fp32").info
    assert info == {"runtime": "xla", "precision": "fp32", "folder": str(teacher), "why": "asked"}
    chosen = jaxqa.pipeline(teacher, max_seq_len=64).info
    assert chosen["why"] != "asked" and "measured" not in chosen
    assert not runtimes.cache_path().exists()


def test_a_loaded_model_runs_as_it_is_and_an_export_in_its_own_runtime(checkpoint, monkeypatch):
    refuse_to_measure(monkeypatch)
    model = jaxqa.load_pretrained(checkpoint, "bf16")
    assert jaxqa.pipeline(model, max_seq_len=64, precision="bf16").info["runtime"] == "xla"
    info = jaxqa.pipeline(checkpoint / "exports" / "onnx-int8", max_seq_len=64).info
    assert (info["runtime"], info["precision"], info["why"]) == (
        "onnx",
        "int8",
        "an export runs in its own runtime and precision",
    )


def test_saving_over_a_checkpoint_drops_its_exports_and_says_so(own_checkpoint, caplog):
    with caplog.at_level(logging.WARNING, "jaxqa"):
        jaxqa.load_pretrained(own_checkpoint).save(own_checkpoint, overwrite=True)
    assert "exports: dropped with the weights it was exported from" in caplog.text
    assert not (own_checkpoint / "exports").exists()
    assert jaxqa.pipeline(own_checkpoint, max_seq_len=64, precision="fp32").info["runtime"] == "xla"


def test_predict_takes_runtime_and_says_the_choice(checkpoint, teacher, monkeypatch, capsys):
    fake_probe(monkeypatch, {"onnx int8": 0.5})
    argv = ["--question", "What shape are the cells?", "--context", runtimes.PASSAGE, "--max-seq-len", "64"]
    assert predict.main(["--checkpoint", str(checkpoint), *argv, "--runtime", "auto"]) == 0
    out, err = capsys.readouterr()
    assert "answer" in json.loads(out)
    assert [line for line in err.splitlines() if line.startswith("runtime auto: onnx int8 (")], err
    assert predict.main(["--checkpoint", str(teacher), *argv, "--runtime", "onnx"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "jaxqa.predict: error: runtime onnx: no ONNX export" in err


def test_the_server_says_what_runs_and_why(checkpoint, monkeypatch):
    pytest.importorskip("fastapi", reason="the service is the optional extra jaxqa[serve]")
    from fastapi.testclient import TestClient

    from jaxqa.serve import command
    from jaxqa.serve.app import create_app

    assert command.parser("jaxqa serve").parse_args(["model", "--runtime", "onnx"]).runtime == "onnx"
    fake_probe(monkeypatch, {"xla bf16": 0.5})
    qa = jaxqa.pipeline(checkpoint, max_seq_len=64)
    with TestClient(create_app(qa, warm_up=False)) as client:
        info = client.get("/info").json()
    assert info["choice"] == qa.info and (info["choice"]["runtime"], info["choice"]["precision"]) == ("xla", "bf16")
