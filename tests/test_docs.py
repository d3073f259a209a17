"""The docs' numbers come from the records: docs/results.md and README.md's
headline table are what docs/make_results.py makes of benchmarks/results/."""

import importlib.util
from pathlib import Path

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
