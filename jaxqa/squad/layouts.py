"""Between the two layouts of SQuAD data: the official JSON (articles >
paragraphs > questions) and flat rows, one per question, both ways and losslessly.

    jaxqa data convert IN OUT        python -m jaxqa.squad.layouts IN OUT

OUT's suffix picks its layout: `.json` is the official JSON; `.jsonl`, `.csv`
and `.parquet` are flat rows, written by `datasets`. IN is any file
`jaxqa.squad.sources` reads, checked as it checks it (flat rows by the column
flags, written under the standard names). A row holds `id`, `title`,
`context`, `question` and `answers: {text: [...], answer_start: [...]}`; data
with SQuAD 2.0 questions also `is_impossible` and `plausible_answers` (null
where a question has no such key). Rows
of one paragraph are consecutive and share its title and context, so the
official JSON comes back with its articles and paragraphs in order; its
"version" is "v2.0" where the rows carry `is_impossible`, else "1.1", as the
official files have it. A CSV cell holds the answers (and `is_impossible`) as
JSON text.
"""

import argparse
import json
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from jaxqa.errors import Error, log_to, write_file
from jaxqa.squad import sources
from jaxqa.squad.examples import read_squad

# The suffixes of the flat layouts OUT may take, and the official one.
FLAT_OUT = (".jsonl", ".csv", ".parquet")
OFFICIAL_OUT = ".json"
# The SQuAD 2.0 fields of a question, carried as columns when the data has them.
V2_FIELDS = ("is_impossible", "plausible_answers")


def rows_of_document(document: dict) -> Iterator[dict]:
    """The flat rows of an official SQuAD JSON document, in its order."""
    v2 = any(V2_FIELDS[0] in qa for article in document["data"] for p in article["paragraphs"] for qa in p["qas"])
    for article in document["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                row = {
                    "id": qa["id"],
                    "title": article.get("title", ""),
                    "context": paragraph["context"],
                    "question": qa["question"],
                    "answers": _columns_of(qa["answers"]),
                }
                if v2:  # None where the question has no such key
                    row["is_impossible"] = qa.get("is_impossible")
                    plausible = qa.get("plausible_answers")
                    row["plausible_answers"] = None if plausible is None else _columns_of(plausible)
                yield row


def document_of_rows(rows: Iterable[dict]) -> dict:
    """The official SQuAD JSON document of flat rows: consecutive rows of one
    title make an article, of one title and context a paragraph."""
    articles: list[dict] = []
    v2 = False
    for row in rows:
        if not articles or articles[-1]["title"] != row["title"]:
            articles.append({"title": row["title"], "paragraphs": []})
        paragraphs = articles[-1]["paragraphs"]
        if not paragraphs or paragraphs[-1]["context"] != row["context"]:
            paragraphs.append({"context": row["context"], "qas": []})
        qa = {"id": row["id"], "question": row["question"], "answers": _list_of(row["answers"])}
        v2 = v2 or "is_impossible" in row
        if row.get("is_impossible") is not None:
            qa["is_impossible"] = row["is_impossible"]
        if row.get("plausible_answers") is not None:
            qa["plausible_answers"] = _list_of(row["plausible_answers"])
        paragraphs[-1]["qas"].append(qa)
    return {"version": "v2.0" if v2 else "1.1", "data": articles}


def _columns_of(answers: list[dict]) -> dict:
    return {"text": [a["text"] for a in answers], "answer_start": [a["answer_start"] for a in answers]}


def _list_of(answers: dict) -> list[dict]:
    return [{"text": t, "answer_start": s} for t, s in zip(answers["text"], answers["answer_start"])]


def read_rows(source: str, columns: sources.Columns) -> list[dict]:
    """The rows of a data file in the standard columns, after `jaxqa.squad.sources` checks them."""
    path = Path(source)
    if path.suffix == ".json" and path.is_file() and path.stat().st_size and sources.is_official(path):
        read_squad(path)  # the checks
        return list(rows_of_document(json.loads(path.read_bytes())))
    sources.read(source, columns=columns)  # the checks, and every refusal
    table = sources.flat_rows(path)
    named = {"id": columns.id, "title": "title", "context": columns.context, "question": columns.question}
    named.update({"answers": columns.answers, **{field: field for field in V2_FIELDS}})
    present = {field: name for field, name in named.items() if name in table.column_names}
    rows = []
    for values in table.iter(batch_size=1000):
        for row in zip(*(values[name] for name in present.values())):
            rows.append({field: _decoded(field, value) for field, value in zip(present, row)})
    if "title" not in present:
        rows = [{**row, "title": ""} for row in rows]
    return rows


def _decoded(field: str, value):
    """A value as a flat file gives it; the JSON text of a CSV cell decoded."""
    if field in ("answers", *V2_FIELDS) and isinstance(value, str):
        return json.loads(value)
    return value


def write(rows: list[dict], out: Path) -> None:
    """Writes the rows in OUT's layout, whole or not at all."""
    if out.suffix == OFFICIAL_OUT:
        write_file(out, json.dumps(document_of_rows(rows), ensure_ascii=False))
        return
    import datasets  # imported here: loading it is slow

    if out.suffix == ".csv":
        rows = [{k: json.dumps(v) if k in ("answers", *V2_FIELDS) else v for k, v in row.items()} for row in rows]
    table = datasets.Dataset.from_list(rows)
    temporary = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with sources.quiet():
            if out.suffix == ".jsonl":
                table.to_json(temporary, lines=True, force_ascii=False)
            elif out.suffix == ".csv":
                table.to_csv(temporary, index=False)
            else:
                table.to_parquet(temporary)
        os.replace(temporary, out)
    except OSError as err:
        temporary.unlink(missing_ok=True)
        raise Error(f"{out}: cannot write the file ({err.strerror})") from None


def main(argv=None, prog: str = "python -m jaxqa.squad.layouts") -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0].replace("\n", " "))
    p.add_argument("source", metavar="IN", help="the official SQuAD JSON or a flat .jsonl/.json/.csv/.parquet file")
    p.add_argument("out", metavar="OUT", help="the file to write: .json (official) or .jsonl/.csv/.parquet (flat)")
    sources.add_column_flags(p)
    args = p.parse_args(argv)
    out = Path(args.out)
    try:
        if out.suffix not in (OFFICIAL_OUT, *FLAT_OUT):
            raise Error(f"{out}: OUT must end in {OFFICIAL_OUT} (official) or {', '.join(FLAT_OUT)} (flat)")
        with log_to(sys.stderr):
            rows = read_rows(args.source, sources.columns_of(args))
            write(rows, out)
    except Error as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    print(f"{len(rows)} questions from {args.source} written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
