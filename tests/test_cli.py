"""The `jaxqa` command: its help lists every verb; each verb reads its arguments
with its module's own parser, under `jaxqa <verb>`; a line without a verb it has
is refused in one line; `jaxqa --help` starts without JAX."""

import importlib
import json
import re
import subprocess
import sys

import pytest

from jaxqa import cli
from jaxqa.checkpoint import PARAMS_FILE

# Each command line's module: `jaxqa <verb>` runs what `python -m <module>` runs.
COMMANDS = [
    (["train"], "jaxqa.train"),
    (["evaluate"], "jaxqa.evaluate"),
    (["predict"], "jaxqa.predict"),
    (["export"], "jaxqa.export.write"),
    (["convert"], "jaxqa.convert.pt2flax"),
    (["convert", "--to", "jaxqa"], "jaxqa.convert.pt2flax"),
    (["convert", "--to", "hf"], "jaxqa.convert.flax2pt"),
    (["convert", "--to=hf"], "jaxqa.convert.flax2pt"),
    (["student"], "jaxqa.convert.make_student"),
    (["plot"], "jaxqa.training.plot"),
    (["metric"], "jaxqa.squad.metric"),
    (["serve"], "jaxqa.serve.command"),
    (["data", "convert"], "jaxqa.squad.layouts"),
]


def test_the_verbs_are_the_tools():
    assert list(cli.VERBS) == [
        "train",
        "evaluate",
        "predict",
        "export",
        "convert",
        "student",
        "plot",
        "metric",
        "serve",
        "data",
    ]
    assert {module for _, module in COMMANDS} == {module for module, _ in cli.VERBS.values()} | {cli.TO_HF}


def test_the_help_lists_every_verb_with_a_line_each(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    listed = dict(re.findall(r"^  ([a-z]+) +(\S.*)$", out, re.MULTILINE))
    assert list(listed) == list(cli.VERBS)
    assert all(listed[verb] == text for verb, (_, text) in cli.VERBS.items())
    assert out.startswith("usage: jaxqa <verb>")


def help_of(main, argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 0
    return capsys.readouterr().out


def flags(text: str) -> set[str]:
    """The options a help names: whole flags, long and short."""
    return set(re.findall(r"(?<![\w-])--?[a-z][a-z0-9-]*(?![a-z0-9-])", text))


@pytest.mark.parametrize("argv,module", COMMANDS, ids=lambda x: " ".join(x) if isinstance(x, list) else "")
def test_each_verb_is_its_modules_parser_under_its_name(argv, module, capsys):
    ours = help_of(cli.main, [*argv, "--help"], capsys)
    own = help_of(importlib.import_module(module).main, ["--help"], capsys)
    prog = (
        "jaxqa convert --to hf"
        if module == cli.TO_HF
        else " ".join(["jaxqa", *argv[:2]] if argv[0] == "data" else ["jaxqa", argv[0]])
    )
    own_prog = re.match(r"usage: (.*?) \[-h\]", own)
    assert ours.startswith(f"usage: {prog} [-h]") and own_prog is not None
    ours, own = ours.replace(prog, "", 1), own.replace(own_prog[1], "", 1)
    assert flags(ours) == flags(own) and {"-h", "--help"} < flags(own)
    # The same text but for the command's name (and where argparse wraps the usage around it).
    assert ours.split() == own.split()


@pytest.mark.parametrize(
    "argv,message",
    [
        (["trian"], "jaxqa: error: 'trian' is not a verb: one of train, evaluate,"),
        (["--version"], "jaxqa: error: '--version' is not a verb"),
        (["convert", "--to", "pt", "a", "b"], "jaxqa convert: error: --to 'pt': jaxqa (the default) or hf"),
        (["convert", "a", "b", "--to"], "jaxqa convert: error: --to '': jaxqa (the default) or hf"),
        (["data", "check", "a"], "jaxqa data: error: 'check': the data verb is `convert`"),
    ],
)
def test_a_line_without_a_verb_it_has_is_refused_in_one_line(argv, message, capsys):
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(message) and err.count("\n") == 1


def test_no_verb_prints_the_help_and_fails(capsys):
    assert cli.main([]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.strip() == cli.HELP


def test_python_m_jaxqa_helps_without_importing_jax():
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "jaxqa", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and all(f"  {verb} " in done.stdout for verb in cli.VERBS)
    imported = set(re.findall(r"^import time:.*\| +(\S+)$", done.stderr, re.MULTILINE))
    assert "jaxqa.cli" in imported and not {name for name in imported if name == "jax" or name.startswith("jax.")}


def test_a_verb_runs_its_command_and_returns_its_status(squad, tmp_path):
    articles = json.loads(squad.read_text())["data"]
    answers = {qa["id"]: qa["answers"][0]["text"] for a in articles for p in a["paragraphs"] for qa in p["qas"]}
    predictions = tmp_path / "predictions.json"
    predictions.write_text(json.dumps(answers))
    done = subprocess.run(
        [sys.executable, "-m", "jaxqa", "metric", str(squad), str(predictions)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["exact"] == 100.0
    refused = subprocess.run(
        [sys.executable, "-m", "jaxqa", "metric", str(squad), str(tmp_path / "nope.json")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and "nope.json" in refused.stderr and len(refused.stderr.splitlines()) == 1


def test_convert_goes_both_ways(teacher, tmp_path, capsys):
    hf, back = tmp_path / "hf", tmp_path / "back"
    assert cli.main(["convert", str(teacher), str(hf), "--to", "hf"]) == 0
    assert json.loads((hf / "config.json").read_text())["architectures"] == ["BertForQuestionAnswering"]
    assert cli.main(["convert", str(hf), str(back)]) == 0
    assert (back / PARAMS_FILE).is_file()
    assert [line.split()[:2] for line in capsys.readouterr().out.splitlines()] == [
        ["wrote", str(hf)],
        ["wrote", str(back)],
    ]
