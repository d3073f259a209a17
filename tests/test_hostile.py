"""Every command against hostile input, as one table: a command line and what
the world around it is made to be (a read-only or full disk, an output that is
its own source, damaged files) -> the command exits non-zero with exactly one
line on stderr, naming the path, flag or key at fault, no traceback, and
nothing in its folders written or lost.

The commands run in this process (`jaxqa.cli.main`); disks that refuse to be
written are simulated here too, since tests may run as root, whom file
permissions do not stop."""

import builtins
import dataclasses
import errno
import hashlib
import io
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from random_models import random_params

from jaxqa import checkpoint, cli
from jaxqa.models import bert
from jaxqa.squad.examples import read_squad

pytest.importorskip("onnxruntime", reason="the world holds an ONNX export (jaxqa[onnx])")


@dataclasses.dataclass(frozen=True)
class World:
    """A folder of what the commands read and write: a checkpoint, a Hugging
    Face folder, an ONNX export, a SQuAD file, predictions, a run folder."""

    root: Path

    def __getattr__(self, name: str) -> Path:
        return self.root / PLACES[name]

    def format(self, text: str) -> str:
        return text.format(**{name: self.root / place for name, place in PLACES.items()}, world=self.root)


PLACES = {
    "ck": "ck",
    "short": "short",  # a BERT of 128 positions
    "hf": "hf",
    "onnx": "onnx",
    "litert": "litert",  # windows of up to 64 tokens
    "squad": "squad.json",
    "preds": "predictions.json",
    "run": "run",
    "eval": "eval",
}


@pytest.fixture(scope="module")
def world(teacher, squad, tmp_path_factory) -> World:
    from jaxqa.export import write

    w = World(tmp_path_factory.mktemp("world"))
    shutil.copytree(teacher, w.ck)
    short = dataclasses.replace(bert.SIZES["tiny"], max_position_embeddings=128)
    checkpoint.save_pretrained(w.short, "bert", short, random_params(short), squad.parent)
    checkpoint.export_hf(w.ck, w.hf)
    write.export(w.ck, w.onnx)
    write.export(w.ck, w.litert, "litert", length=64)
    tampered(w.onnx, w.root / "onnx-names", lambda record, config: record.update(inputs=["ids", "mask", "types"]))
    tampered(w.litert, w.root / "litert-lengths", lambda record, config: record.update(lengths=[]))
    tampered(w.onnx, w.root / "onnx-vocab", lambda record, config: config.update(vocab_size=40000))
    tampered(w.onnx, w.root / "onnx-positions", lambda record, config: config.update(max_position_embeddings=1024))
    (w.root / "syntax.py").write_text("def get_config(arg):\n    return {'batch_size': 4,,}\n")
    (w.root / "raises.py").write_text(
        "def get_config(arg):\n    sizes = {}\n    return {'batch_size': sizes['tiny']}\n"
    )
    shutil.copy2(squad, w.squad)
    w.preds.write_text(json.dumps({example.id: "Ada" for example in read_squad(squad).examples}))
    shutil.copytree(teacher, w.run / "model")
    (w.run / "metrics.jsonl").write_text('{"step": 1, "loss": 5.0}\n{"step": 2, "loss": 4.0}\n')
    w.eval.mkdir()
    return w


def tampered(export: Path, out: Path, edit: Callable[[dict, dict], None]) -> None:
    """A copy of `export` at `out`, its export.json and config.json as `edit(record, config)` leaves them."""
    shutil.copytree(export, out)
    record, config = (json.loads((out / name).read_text()) for name in ("export.json", "config.json"))
    edit(record, config)
    (out / "export.json").write_text(json.dumps(record))
    (out / "config.json").write_text(json.dumps(config))


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under `root`, with a digest of each file's bytes."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "folder"
        for path in sorted(root.rglob("*"))
    }


# ------------------------------------------------------------------ disks that refuse
def failing_disk(monkeypatch, root: Path, code: int) -> None:
    """From here on in the test, every write under `root` (making, opening to
    write, renaming, removing a file or folder) fails with OSError `code`, as
    on a read-only (EROFS) or full (ENOSPC) disk."""

    def under(path) -> bool:
        return isinstance(path, (str, bytes, os.PathLike)) and os.path.abspath(os.fsdecode(path)).startswith(
            str(root) + os.sep
        )

    def refuse(path):
        raise OSError(code, os.strerror(code), os.fsdecode(path))

    def guarded(call, is_write):
        def wrapper(*args, **kwargs):
            if is_write(*args, **kwargs):
                refuse(args[0])
            return call(*args, **kwargs)

        return wrapper

    def opens_to_write(file, mode="r", *args, **kwargs) -> bool:
        return under(file) and any(flag in mode for flag in "wax+")

    def os_open_to_write(path, flags, *args, **kwargs) -> bool:
        return under(path) and bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))

    for name in ("mkdir", "replace", "rename", "unlink", "remove", "rmdir"):
        monkeypatch.setattr(os, name, guarded(getattr(os, name), lambda path, *a, **k: under(path)))
    monkeypatch.setattr(os, "open", guarded(os.open, os_open_to_write))
    monkeypatch.setattr(io, "open", guarded(io.open, opens_to_write))
    monkeypatch.setattr(builtins, "open", io.open)


# ------------------------------------------------------------------ the table
@dataclasses.dataclass(frozen=True)
class Case:
    """`argv` (with {ck}, {onnx}, {world}... for the world's places) fails,
    its one line naming each of `names` (formatted alike), after `setup`."""

    argv: str
    names: tuple[str, ...]
    setup: Callable[[World, pytest.MonkeyPatch], None] = lambda world, monkeypatch: None

    def __str__(self) -> str:
        return self.argv


def read_only(world: World, monkeypatch) -> None:
    failing_disk(monkeypatch, world.root, errno.EROFS)


def read_only_not_evaluated(world: World, monkeypatch) -> None:
    """A read-only disk, which evaluate must find before it loads the model."""
    from jaxqa import evaluate

    def too_late(*args, **kwargs):
        raise AssertionError("the model was loaded before --out-dir was found unwritable")

    monkeypatch.setattr(evaluate, "open_model", too_late)
    read_only(world, monkeypatch)


def full(world: World, monkeypatch) -> None:
    failing_disk(monkeypatch, world.root, errno.ENOSPC)


TRAIN = "train --model bert --config bert:tiny --tokenizer {world}/ck --train-file {squad} --eval-file ''"
EVALUATE = "evaluate --checkpoint {ck} --data {squad}"
READ_ONLY, NO_SPACE = os.strerror(errno.EROFS), os.strerror(errno.ENOSPC)

CASES = [
    # An output that is its source, or holds it, with --overwrite.
    Case("export {ck} {ck} --overwrite", ("{ck} is the source",)),
    Case("export {run}/model {run} --overwrite", ("{run} holds the source {run}/model",)),
    Case("convert {hf} {hf} --overwrite", ("{hf} is the source",)),
    Case("convert {hf} {world} --overwrite", ("{world} holds the source",)),
    Case("convert --to hf {ck} {ck} --overwrite", ("{ck} is the source",)),
    Case("student {ck} {ck} --overwrite", ("{ck} is the source",)),
    # A read-only disk.
    Case("export {ck} {world}/new", ("{world}/new", READ_ONLY), read_only),
    Case("export {ck} {onnx} --overwrite", ("{onnx}", READ_ONLY), read_only),
    Case("convert {hf} {world}/new", ("{world}/new", READ_ONLY), read_only),
    Case("convert --to hf {ck} {world}/new", ("{world}/new", READ_ONLY), read_only),
    Case("student {ck} {world}/new", ("{world}/new", READ_ONLY), read_only),
    Case("metric {squad} {preds} -o {world}/scores.json", ("{world}/scores.json", READ_ONLY), read_only),
    Case("plot {run}", ("{run}/curves.png", READ_ONLY), read_only),
    Case(f"{EVALUATE} --out-dir {{eval}}", ("--out-dir {eval}", READ_ONLY), read_only_not_evaluated),
    Case(f"{TRAIN} --run-dir {{run}}", ("--run-dir {run}", READ_ONLY), read_only),
    # A full disk.
    Case("export {ck} {world}/new", ("{world}/new", NO_SPACE), full),
    Case("convert {hf} {world}/new", ("{world}/new", NO_SPACE), full),
    Case("metric {squad} {preds} -o {world}/scores.json", ("{world}/scores.json", NO_SPACE), full),
    Case("plot {run} --out {world}/c.png", ("{world}/c.png", NO_SPACE), full),
    Case(f"{EVALUATE} --out-dir {{eval}}", ("--out-dir {eval}", NO_SPACE), full),
    # Paths that cannot be folders or files.
    Case("export {ck} /dev/null/x", ("/dev/null/x",)),
    Case("export {ck} ''", ("''",)),
    Case("convert {hf} /dev/null/x", ("/dev/null/x",)),
    Case("convert {hf} ''", ("''",)),
    Case("convert --to hf {ck} /dev/null/x", ("/dev/null/x",)),
    Case("student {ck} /dev/null/x", ("/dev/null/x",)),
    Case("metric {squad} {preds} -o /dev/null/x", ("/dev/null/x",)),
    Case("metric {squad} {preds} -o ''", ("''",)),
    Case("plot {run} --out /dev/null/x", ("/dev/null/x",)),
    Case(f"{EVALUATE} --out-dir /dev/null/x", ("--out-dir /dev/null/x",)),
    Case(f"{EVALUATE} --out-dir ''", ("--out-dir ''",)),
    Case(f"{TRAIN} --run-dir /dev/null/x", ("/dev/null/x",)),
    # Windows that an export or a model cannot take.
    Case(
        f"{EVALUATE} --out-dir {{eval}} --checkpoint {{litert}} --max-seq-length 128 --doc-stride 32",
        ("--max-seq-length 128", "64"),
    ),
    Case("export {short} {world}/new --format litert --task-library", ("--task-library", "128")),
    # Export records and configs edited by hand.
    Case(
        "predict --checkpoint {world}/onnx-names --question Who? --context Ada.", ("onnx-names/export.json", "inputs")
    ),
    Case(
        f"{EVALUATE} --out-dir {{eval}} --checkpoint {{world}}/litert-lengths",
        ("litert-lengths/export.json", "lengths"),
    ),
    Case(
        "predict --checkpoint {world}/onnx-vocab --question Who? --context Ada.",
        ("onnx-vocab/config.json", "vocab_size"),
    ),
    Case(
        "predict --checkpoint {world}/onnx-positions --question Who? --context Ada.",
        ("onnx-positions/config.json", "max_position_embeddings"),
    ),
    # Recipes that do not run.
    Case(f"{TRAIN} --run-dir {{world}}/new --config {{world}}/syntax.py", ("--config {world}/syntax.py", "line 2")),
    Case(f"{TRAIN} --run-dir {{world}}/new --config {{world}}/raises.py", ("{world}/raises.py, line 3", "KeyError")),
    # Basic bad inputs, for each command.
    Case(f"{TRAIN} --run-dir {{world}}/new --train-file {{world}}/missing.json", ("{world}/missing.json",)),
    Case(f"{TRAIN} --run-dir {{world}}/new --config {{world}}/missing.py", ("--config {world}/missing.py",)),
    Case(f"{EVALUATE} --out-dir {{eval}} --checkpoint {{world}}/missing", ("{world}/missing",)),
    Case(f"{EVALUATE} --out-dir {{eval}} --data {{preds}}", ("{preds}",)),
    Case("predict --checkpoint {world}/missing --question Who? --context Ada.", ("{world}/missing",)),
    Case("predict --checkpoint {ck} --file {world}/missing.jsonl", ("{world}/missing.jsonl",)),
    Case("export {world}/missing {world}/new", ("{world}/missing",)),
    Case("export {ck} {world}/new --format litert --sequence 0", ("--sequence 0",)),
    Case("export {ck} {onnx}", ("{onnx} already exists",)),
    Case("convert {world}/missing {world}/new", ("{world}/missing",)),
    Case("convert --to hf {world}/missing {world}/new", ("{world}/missing",)),
    Case("student {ck} {world}/new --layers 7", ("--layers",)),
    Case("plot {eval}", ("{eval}/metrics.jsonl",)),
    Case("metric {preds} {preds}", ("{preds}",)),
    Case("metric {squad} {world}/missing.json", ("{world}/missing.json",)),
    Case("serve {ck} --port 0", ("--port 0",)),
    Case("serve {ck} --timeout 0", ("--timeout 0",)),
    Case("serve {world}/missing", ("{world}/missing",)),
]


def shell_words(line: str) -> list[str]:
    """The words of `line`, where '' is an empty word."""
    return ["" if word == "''" else word for word in line.split(" ")]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_a_hostile_command_line_fails_in_one_line_and_changes_nothing(case, world, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("JAXQA_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    before = snapshot(world.root)
    case.setup(world, monkeypatch)
    try:
        status = cli.main(shell_words(world.format(case.argv)))
    except SystemExit as done:
        status = done.code
    monkeypatch.undo()
    out, err = capsys.readouterr()
    assert status not in (0, None), out
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for name in case.names:
        assert world.format(name) in err, err
    assert snapshot(world.root) == before
    assert list(tmp_path.iterdir()) in ([], [tmp_path / "cache"])


def test_an_export_interrupted_by_sigint_says_so_and_leaves_nothing(world, tmp_path, monkeypatch, capsys):
    """SIGINT while the int8 model is made: one line, nothing at OUT or beside
    it, and the float32 intermediate was in OUT's temporary folder, never in the
    system's temporary folder, where a SIGKILL would leave it for good."""
    import onnxruntime.quantization

    system_temp = tmp_path / "system-temp"
    system_temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_temp))
    out = tmp_path / "out"
    intermediates = []

    def interrupted(model_input, model_output, **options):
        intermediates.append(Path(model_input))
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the signal's KeyboardInterrupt comes first

    monkeypatch.setattr(onnxruntime.quantization, "quantize_dynamic", interrupted)
    assert cli.main(["export", str(world.ck), str(out), "--precision", "int8"]) == 130
    err = capsys.readouterr().err
    assert err == f"jaxqa-export: error: interrupted; nothing written to {out}\n"
    (intermediate,) = intermediates
    assert intermediate.parent.parent == tmp_path and intermediate.parent.name.startswith(f".{out.name}.")
    assert list(tmp_path.iterdir()) == [system_temp] and list(system_temp.iterdir()) == []
