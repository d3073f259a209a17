"""`jaxqa.predict --file` as a batch tool, on a tiny model: inputs keep their
id and question, every input is checked before any is answered, stdin and
--output, a byte order mark and a lone object, a progress bar on a terminal,
and a reader that stops early."""

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

import jaxqa
from jaxqa import predict

ROOT = Path(__file__).resolve().parents[1]
CONTEXT = "The tower of gondor stands near ithil. The river of arda stands near harad."
FIXED = ["--max-seq-len", "64", "--precision", "fp32"]


def rows(count: int) -> list[dict]:
    return [
        {"id": f"q{i}", "question": f"Where does the tower of gondor stand? ({i})", "context": CONTEXT}
        for i in range(count)
    ]


def spans(answer: dict) -> tuple:
    """An answer's span, and its score to four places (batches of other shapes round otherwise)."""
    return answer["answer"], answer["start"], answer["end"], pytest.approx(answer["score"], rel=1e-4)


def test_each_line_keeps_its_id_and_question_and_output_is_written_whole(teacher, tmp_path, capsys):
    questions = tmp_path / "questions.jsonl"
    asked = rows(3)
    del asked[1]["id"]  # an input without an id gets a line without one
    questions.write_text("".join(json.dumps(row) + "\n" for row in asked))
    out = tmp_path / "answers.jsonl"
    argv = ["--checkpoint", str(teacher), "--file", str(questions), *FIXED]
    assert predict.main([*argv, "--output", str(out), "--top-k", "2"]) == 0
    assert capsys.readouterr().out == ""
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line.get("id") for line in lines] == ["q0", None, "q2"]
    assert [line["question"] for line in lines] == [row["question"] for row in asked]
    qa = jaxqa.pipeline(teacher, max_seq_len=64, precision="fp32")
    expected = qa(question=asked[0]["question"], context=CONTEXT, top_k=2)
    assert [spans(answer) for answer in lines[0]["answers"]] == [spans(answer) for answer in expected]
    assert predict.main(argv) == 0  # top 1: the answer's fields beside the id and question
    first = json.loads(capsys.readouterr().out.splitlines()[0])
    assert list(first) == ["id", "question", "score", "start", "end", "answer"]
    assert spans(first) == spans(qa(question=asked[0]["question"], context=CONTEXT))


def test_every_bad_input_is_named_and_none_is_answered(teacher, tmp_path, capsys):
    lines = [json.dumps(row) for row in rows(6)]
    lines[1] = '{"question": "Who?"}'
    lines[3] = "{oops"
    lines[4] = json.dumps({"id": ["x"], "question": "Who?", "context": CONTEXT})
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    out = tmp_path / "answers.jsonl"
    assert predict.main(["--checkpoint", str(teacher), "--file", str(bad), "--output", str(out), *FIXED]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and not out.exists()
    assert captured.err.splitlines() == [
        f"jaxqa.predict: error: {bad}:2: 'context' must be a non-empty string",
        f"jaxqa.predict: error: {bad}:4: not valid JSON (Expecting property name enclosed in double quotes)",
        f"jaxqa.predict: error: {bad}:5: 'id' must be a string or a whole number, got list",
    ]
    # Contexts of no tokens are found before any question is answered too.
    empty = [*rows(2), {"question": "Who?", "context": "\u200b"}, {"question": "Who?", "context": "\u200b\u200b"}]
    bad.write_text("\n".join(json.dumps(row) for row in empty) + "\n")
    assert predict.main(["--checkpoint", str(teacher), "--file", str(bad), *FIXED]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"jaxqa.predict: error: {bad}:{line}: the context has no tokens, so no answer" for line in (3, 4)
    ]


def test_a_byte_order_mark_and_a_lone_object_are_read(teacher, tmp_path, capsys):
    one = tmp_path / "one.json"
    one.write_bytes(b"\xef\xbb\xbf" + json.dumps(rows(1)[0], indent=2).encode())  # as some editors save it
    assert predict.main(["--checkpoint", str(teacher), "--file", str(one), *FIXED]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["id"] == "q0"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_progress_bar_on_a_terminal_only(teacher, tmp_path, capsys, monkeypatch):
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps(row) + "\n" for row in rows(3)))
    argv = ["--checkpoint", str(teacher), "--file", str(questions), *FIXED]
    assert predict.main(argv) == 0
    assert capsys.readouterr().err == ""
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert predict.main(argv) == 0
    assert "3/3" in terminal.getvalue() and "question" in terminal.getvalue()


def test_stdin_in_and_a_reader_that_stops_early(teacher, tmp_path):
    # Far more than a pipe holds, so that the command is still writing when `head` leaves.
    long_question = "Where does the tower of gondor stand? " * 10
    asked = tmp_path / "questions.jsonl"
    asked.write_text("".join(json.dumps({**row, "question": long_question}) + "\n" for row in rows(400)))
    command = f"{sys.executable} -m jaxqa.predict --checkpoint {teacher} --file - --max-seq-len 192 --precision fp32"
    done = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {command} < {asked} 2> {tmp_path / 'err'} | head -n 1"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 0, (tmp_path / "err").read_text()
    assert json.loads(done.stdout)["id"] == "q0"
    assert (tmp_path / "err").read_text() == ""


def test_an_output_in_a_missing_folder_is_refused_before_loading(tmp_path, capsys):
    questions = tmp_path / "questions.jsonl"
    questions.write_text(json.dumps(rows(1)[0]) + "\n")
    argv = [
        "--checkpoint",
        str(tmp_path / "nowhere"),
        "--file",
        str(questions),
        "--output",
        str(tmp_path / "no" / "a.jsonl"),
    ]
    assert predict.main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"jaxqa.predict: error: --output {tmp_path / 'no' / 'a.jsonl'}: its folder does not exist\n"


def test_an_unreadable_file_is_named_once(tmp_path, capsys):
    missing, latin = tmp_path / "missing.jsonl", tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"question": "Qui?", "context": "caf\xe9"}\n')
    for path, said in ((missing, "cannot read (No such file or directory)"), (latin, "not UTF-8 text")):
        assert predict.main(["--checkpoint", str(tmp_path), "--file", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"jaxqa.predict: error: {path}: {said}") and err.count(str(path)) == 1, err
