"""A run's curves: read from metrics.jsonl (a resumed run's repeated steps once) and drawn as a PNG."""

import json

import pytest

from jaxqa.training import plot


def write_metrics(run_dir, records):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_the_curves_keep_the_last_value_of_each_step(tmp_path):
    write_metrics(tmp_path / "run", [
        {"step": 1, "loss": 5.0, "learning_rate": 1e-3},
        {"step": 2, "loss": 4.0},
        {"step": 2, "exact": 10.0, "f1": 12.5, "eval_seconds": 3.0},
        {"resumed_from_step": 1},
        {"step": 2, "loss": 3.9},  # logged again after the resume
        {"step": 3, "loss": 3.0},
        {"summary": {"steps": 3}},
    ])  # fmt: skip
    found = plot.curves(tmp_path / "run")
    assert found == {"loss": [(1, 5.0), (2, 3.9), (3, 3.0)], "exact": [(2, 10.0)], "f1": [(2, 12.5)]}


def test_a_killed_runs_complete_lines_are_plotted(tmp_path):
    write_metrics(tmp_path / "run", [{"step": 1, "loss": 5.0}, {"step": 2, "loss": 4.0}])
    with (tmp_path / "run" / "metrics.jsonl").open("a") as f:
        f.write('{"step": 3, "lo')  # killed while writing the line
    assert plot.curves(tmp_path / "run")["loss"] == [(1, 5.0), (2, 4.0)]


def test_the_picture_is_in_the_format_its_suffix_names(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="plots need matplotlib (pip install 'jaxqa[plot]')")
    write_metrics(tmp_path / "run", [{"step": s, "loss": 1 / s} for s in range(1, 4)])
    assert plot.main([str(tmp_path / "run"), "--out", str(tmp_path / "c.jpg")]) == 0
    assert (tmp_path / "c.jpg").read_bytes().startswith(b"\xff\xd8\xff")  # JPEG's
    assert plot.main([str(tmp_path / "run"), "--out", str(tmp_path / "c.svg")]) == 0
    assert b"<svg" in (tmp_path / "c.svg").read_bytes()[:500]
    capsys.readouterr()
    for bad in ("c.txt", "curves"):
        assert plot.main([str(tmp_path / "run"), "--out", str(tmp_path / bad)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"jaxqa.training.plot: error: --out {tmp_path / bad}: name a file whose suffix")
        assert ".jpg" in err and ".png" in err and err.count("\n") == 1
        assert not (tmp_path / bad).exists()


def test_the_command_draws_a_png_in_the_run_folder(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="plots need matplotlib (pip install 'jaxqa[plot]')")
    write_metrics(
        tmp_path / "run", [{"step": s, "loss": 1 / s} for s in range(1, 5)] + [{"step": 4, "f1": 9.0, "exact": 7.0}]
    )
    assert plot.main([str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "curves.png").read_bytes().startswith(b"\x89PNG")
    assert capsys.readouterr().out == f"wrote {tmp_path / 'run' / 'curves.png'}\n"


@pytest.mark.parametrize(
    "records, message",
    [
        (None, "metrics.jsonl: cannot read the run's metrics"),
        ([{"summary": {}}], "metrics.jsonl: no loss logged yet"),
    ],
)
def test_a_run_without_curves_is_said_in_one_line(tmp_path, capsys, records, message):
    if records is not None:
        write_metrics(tmp_path / "run", records)
    assert plot.main([str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxqa.training.plot: error: ") and message in err and err.count("\n") == 1
