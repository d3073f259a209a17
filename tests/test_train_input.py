"""`jaxqa.train` against hostile input: flags out of range, a run folder that is
a file, windows longer than the model's positions, and a rerun with other
settings. Each is refused in one line naming the flag or folder, before any work."""

import json
import os
import socket
import subprocess
import sys

import pytest
from test_train import flags, run

import jaxqa
from jaxqa import train
from jaxqa.training import settings


def refusal(capsys, args: list[str]) -> str:
    """The one line that `train.main(args)` prints to stderr, refusing `args` (exit status 2)."""
    assert train.main(args) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("jaxqa.train: error: "), err
    return err


@pytest.mark.parametrize(
    "extra, flag",
    [
        (["--batch-size", "0"], "--batch-size"),
        (["--batch-size", "-16"], "--batch-size"),
        (["--grad-accum", "0"], "--grad-accum"),
        (["--eval-batch-size", "0"], "--eval-batch-size"),
        (["--save-every", "0"], "--save-every"),
        (["--log-every", "0"], "--log-every"),
        (["--keep", "0"], "--keep"),
        (["--eval-every", "-1"], "--eval-every"),
        (["--seed", "-1"], "--seed"),
        (["--seed", str(2**64)], "--seed"),
        (["--doc-stride", "-1"], "--doc-stride"),
        (["--doc-stride", "64"], "--doc-stride"),  # the tiny recipe's windows are 64 tokens
        (["--max-query-length", "0"], "--max-query-length"),
        (["--max-seq-length", "4"], "--max-seq-length"),
        (["--max-steps", "-1"], "--max-steps"),
        (["--max-train-examples", "-1"], "--max-train-examples"),
        (["--max-eval-examples", "-1"], "--max-eval-examples"),
        (["--num-processes", "0"], "--num-processes"),
        (["--num-processes", "2"], "--coordinator"),
        (["--prune", "magnitude", "--max-steps", "4", "--warmup-proportion", "0.5"], "--prune-initial-warmup"),
        (["--prune", "magnitude", "--warmup-proportion", "0", "--prune-final-warmup", "3"], "--prune-final-warmup 3"),
        (["--prune", "magnitude", "--max-steps", "4", "--prune-initial-warmup", "0.5"], "--prune-initial-warmup 0.5"),
        (["--process-id", "-1"], "--process-id"),
        (["--process-id", "1"], "--process-id"),
        (["--epochs", "0"], "--epochs"),
        (["--epochs", "inf"], "--epochs"),
        (["--epochs", "nan"], "--epochs"),
        (["--learning-rate", "-0.001"], "--learning-rate"),
        (["--learning-rate", "nan"], "--learning-rate"),
        (["--clip-norm", "0"], "--clip-norm"),
        (["--weight-decay", "-0.1"], "--weight-decay"),
        (["--weight-decay", "inf"], "--weight-decay"),
        (["--warmup-proportion", "1"], "--warmup-proportion"),
        (["--warmup-proportion", "nan"], "--warmup-proportion"),
        (["--null-score-diff-threshold", "nan"], "--null-score-diff-threshold"),
        (["--run-dir", "runs/{size}"], "--run-dir"),
    ],
)
def test_out_of_range_flags_are_refused_before_any_work(squad, tmp_path, capsys, extra, flag):
    err = refusal(capsys, [*flags(squad, "bert", tmp_path / "run"), *extra])
    assert flag in err
    assert not (tmp_path / "run").exists()


def test_a_start_that_fails_leaves_no_empty_checkpoints_folder(squad, tmp_path, capsys, monkeypatch):
    def failed(*args):
        raise jaxqa.Error("the step cannot be compiled")

    monkeypatch.setattr(train, "compile_step", failed)
    assert "the step cannot be compiled" in refusal(capsys, flags(squad, "bert", tmp_path / "run"))
    assert sorted(path.name for path in (tmp_path / "run").iterdir()) == ["run.json"]  # no checkpoints/, no lock


def test_a_run_dir_that_is_a_file_is_refused(squad, tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    for run_dir in (tmp_path / "file", tmp_path / "file" / "run"):
        err = refusal(capsys, flags(squad, "bert", run_dir))
        assert "--run-dir" in err and str(tmp_path / "file") in err
    assert (tmp_path / "file").read_text() == "not a folder"


def test_windows_longer_than_the_position_table_are_refused(squad, tmp_path, capsys):
    # The tiny BERT has BERT's 512 positions; past them every logit would be NaN.
    err = refusal(capsys, [*flags(squad, "bert", tmp_path / "run"), "--max-seq-length", "1024"])
    assert "--max-seq-length 1024" in err and "512" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_rerun_with_other_settings_says_what_changed_and_needs_a_flag(squad, tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = [*flags(squad, "bert", run_dir), "--max-steps", "2", "--save-every", "1"]
    run(["-m", "jaxqa.train", *args])
    recorded = json.loads((run_dir / "run.json").read_text())
    assert recorded["settings"]["batch_size"] == 16 and "run_dir" not in recorded["settings"]

    # What the run computes: refused, naming each change; the folder is left as it was.
    err = refusal(capsys, [*args, "--batch-size", "8", "--seed", "1", "--learning-rate", "0.002"])
    assert "--batch-size: 16 -> 8" in err and "--seed: 0 -> 1" in err and "--learning-rate: 0.001 -> 0.002" in err
    assert "--allow-changed-settings" in err and str(run_dir) in err
    assert json.loads((run_dir / "run.json").read_text()) == recorded
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["1", "2"]

    # Where and how it runs, saves and logs: resumed as before (all steps done, nothing to train).
    same = run(["-m", "jaxqa.train", *args, "--save-every", "5", "--keep", "2", "--log-every", "3", "--mesh", "data=1"])
    assert "resumed from" in same.stdout and "resuming with" not in same.stdout

    # With the flag: resumed with the new values, said in one line, and recorded for the next rerun.
    changed = [*args, "--max-steps", "3", "--allow-changed-settings"]
    resumed = run(["-m", "jaxqa.train", *changed])
    assert "resuming with --max-steps: 2 -> 3" in resumed.stdout and "at step 2" in resumed.stdout
    assert json.loads((run_dir / "run.json").read_text())["settings"]["max_steps"] == 3
    again = run(["-m", "jaxqa.train", *args, "--max-steps", "3"])
    assert "resumed from" in again.stdout and "resuming with" not in again.stdout


@pytest.mark.slow
def test_a_run_folder_of_an_older_version_resumes_as_before(squad, tmp_path):
    run_dir = tmp_path / "run"
    args = [*flags(squad, "bert", run_dir), "--max-steps", "1"]
    run(["-m", "jaxqa.train", *args])
    marker = run_dir / "run.json"
    marker.write_text(json.dumps({k: v for k, v in json.loads(marker.read_text()).items() if k != "settings"}))
    out = run(["-m", "jaxqa.train", *args, "--seed", "5"]).stdout
    assert "resumed from" in out and "resuming with" not in out
    assert json.loads(marker.read_text())["settings"]["seed"] == 5


def test_the_flag_has_help(capsys):
    with pytest.raises(SystemExit):
        train.main(["--help"])
    assert "--allow-changed-settings" in capsys.readouterr().out


def test_a_file_in_place_of_run_json_is_refused(squad, tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text("{not json")
    err = refusal(capsys, [*flags(squad, "bert", tmp_path / "run"), "--max-steps", "1"])
    assert "run.json" in err and "--run-dir" in err


@pytest.mark.parametrize(
    "recipe, message",
    [
        ('{"batch_size": "big"}', "batch_size must be an integer, got 'big'"),
        ('{"batch_size": 8.0}', "batch_size must be an integer, got 8.0"),
        ('{"learning_rate": True}', "learning_rate must be a number, got True"),
        ('{"scan_layers": "no"}', "scan_layers must be true or false, got 'no'"),
        ('{"attention_dropout": "0"}', "attention_dropout must be a number or None, got '0'"),
        ("[1, 2]", "get_config returned list, not a dict of settings"),
    ],
)
def test_a_recipe_of_the_wrong_types_is_refused_in_one_line(squad, tmp_path, capsys, recipe, message):
    path = tmp_path / "recipe.py"
    path.write_text(f"def get_config(arg):\n    return {recipe}\n")
    err = refusal(capsys, [*flags(squad, "bert", tmp_path / "run"), "--config", str(path)])
    assert f"--config {path}: {message}" in err


def test_a_recipe_may_give_a_whole_number_for_a_float(tmp_path):
    path = tmp_path / "recipe.py"
    path.write_text('def get_config(arg):\n    return {"learning_rate": 1, "epochs": 3}\n')
    recipe = settings.load_recipe(str(path))
    assert recipe == {"learning_rate": 1.0, "epochs": 3.0} and isinstance(recipe["epochs"], float)


@pytest.mark.slow
def test_a_training_file_edited_under_the_same_path_is_refused_on_resume(squad, tmp_path, capsys):
    data = tmp_path / "train.json"
    data.write_text(squad.read_text())
    args = [*flags(squad, "bert", tmp_path / "run"), "--train-file", str(data), "--max-steps", "1"]
    assert train.main(args) == 0
    capsys.readouterr()
    edited = json.loads(data.read_text())
    del edited["data"][0]  # a quarter fewer windows: another epoch under the same name
    data.write_text(json.dumps(edited))
    err = refusal(capsys, [*args, "--max-steps", "2"])
    assert "the --train-file's contents changed" in err and "--allow-changed-settings" in err


def test_a_second_training_in_a_run_folder_in_use_is_refused(squad, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "lock").write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))  # alive: this one
    err = refusal(capsys, [*flags(squad, "bert", run_dir), "--max-steps", "1"])
    assert f"{run_dir} is in use by another training (pid {os.getpid()} on {socket.gethostname()}" in err
    assert sorted(p.name for p in run_dir.iterdir()) == ["lock"]


@pytest.mark.slow
def test_the_lock_of_a_killed_training_is_taken_over(squad, tmp_path, capsys):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "lock").write_text(json.dumps({"host": socket.gethostname(), "pid": int(gone.stdout)}))
    assert train.main([*flags(squad, "bert", run_dir), "--max-steps", "1"]) == 0
    assert not (run_dir / "lock").exists()  # given back at the end


def test_a_checkpoint_that_cannot_be_saved_stops_the_run_in_one_line(squad, tmp_path, capsys, monkeypatch):
    import errno

    import orbax.checkpoint as ocp

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ocp.CheckpointManager, "save", full)
    assert train.main([*flags(squad, "bert", tmp_path / "run"), "--max-steps", "3", "--save-every", "1"]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line]  # besides the progress bar's lines
    assert len(errors) == 1 and "Traceback" not in err, err
    assert f"jaxqa.train: error: {tmp_path / 'run' / 'checkpoints'}: a checkpoint could not be saved" in errors[0]
    assert "No space left on device" in errors[0] and "the run stops" in errors[0]


def test_a_save_that_fails_in_the_background_stops_the_run_at_its_step_without_tracebacks(
    squad, tmp_path, capfd, monkeypatch
):
    import errno

    from orbax.checkpoint._src.handlers import base_pytree_checkpoint_handler as handler

    async def full(*args, **kwargs):  # in orbax's own thread, after the arrays are written
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(handler.BasePyTreeCheckpointHandler, "_write_metadata_after_commits", full)
    args = [*flags(squad, "bert", tmp_path / "run"), "--max-steps", "4", "--save-every", "1", "--log-every", "1"]
    assert train.main(args) == 2
    err = capfd.readouterr().err  # orbax's threads log to the process's stderr
    errors = [line for line in err.splitlines() if "error" in line.lower()]  # besides the progress bar's lines
    assert len(errors) == 1 and "Traceback" not in err, err
    assert "a checkpoint could not be saved" in errors[0] and "No space left on device" in errors[0]
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [record["step"] for record in logged if "step" in record] == [1]  # stopped at the failed save


def test_pruning_warm_ups_that_cannot_apply_are_said(squad, tmp_path, capsys):
    # A schedule with nothing to decay over is refused (above); warm-ups of 0 steps are said to do nothing.
    args = [
        *flags(squad, "bert", tmp_path / "run"),
        "--prune",
        "magnitude",
        "--max-steps",
        "1",
        "--warmup-proportion",
        "0",
    ]
    assert train.main(args) == 0
    out = capsys.readouterr().out
    said = [line for line in out.splitlines() if "--prune-initial-warmup" in line]
    assert len(said) == 1 and said[0].startswith("WARNING: ") and "pruning decays over the whole run" in said[0]
