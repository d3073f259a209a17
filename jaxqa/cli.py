"""The `jaxqa` command: one verb per tool, each read by its module's own parser.

    jaxqa train --model bert ...         python -m jaxqa.train --model bert ...
    jaxqa convert SRC OUT                a Hugging Face PyTorch checkpoint in (jaxqa-pt2flax)
    jaxqa convert --to hf SRC OUT        a Hugging Face folder out (jaxqa-flax2pt)
    jaxqa data convert IN OUT            SQuAD data between the official JSON and flat files

A verb's module is imported only when the verb runs, so that `jaxqa --help`
starts without JAX.
"""

import importlib
import sys

from jaxqa.errors import Error

# Each verb: the module whose main(argv, prog) runs it, and what it does.
VERBS = {
    "train": ("jaxqa.train", "fine-tune an encoder on SQuAD, distilling or pruning as asked"),
    "evaluate": ("jaxqa.evaluate", "score a checkpoint or an export on a SQuAD file"),
    "predict": ("jaxqa.predict", "answer questions given on the command line or in a file"),
    "export": ("jaxqa.export.write", "write a checkpoint as an ONNX or LiteRT model"),
    "convert": ("jaxqa.convert.pt2flax", "convert a Hugging Face PyTorch checkpoint to jaxqa (--to hf: the reverse)"),
    "student": ("jaxqa.convert.make_student", "make a student checkpoint from a teacher's layers"),
    "plot": ("jaxqa.training.plot", "draw a training run's curves"),
    "metric": ("jaxqa.squad.metric", "score predictions with the official SQuAD metric"),
    "serve": ("jaxqa.serve.command", "answer questions over HTTP, batching the requests"),
    "data": ("jaxqa.squad.layouts", "data convert IN OUT: SQuAD data between the official JSON and flat files"),
}
# `jaxqa convert --to hf`: from jaxqa to Hugging Face.
TO_HF = "jaxqa.convert.flax2pt"

HELP = "\n".join(
    [
        "usage: jaxqa <verb> [options]",
        "",
        "Extractive question answering with compact BERT-family encoders in JAX.",
        "",
        "verbs:",
        *(f"  {verb:<10}{text}" for verb, (_, text) in VERBS.items()),
        "",
        "`jaxqa <verb> --help` lists a verb's options. Each verb is also its module's",
        "`python -m` command, as in `python -m jaxqa.train`.",
    ]
)


class UsageError(Error):
    """A command line that names no verb the command has; the message says what is wrong."""


def direction(argv: list[str]) -> tuple[str, list[str]]:
    """`jaxqa convert`'s --to (jaxqa, the default, or hf), wherever it stands
    before a `--`, and the arguments without it."""
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        if arg.startswith("--to="):
            to, rest = arg.removeprefix("--to="), argv[i + 1 :]
        elif arg == "--to":
            to, rest = (argv[i + 1] if i + 1 < len(argv) else ""), argv[i + 2 :]
        else:
            continue
        if to not in ("jaxqa", "hf"):
            raise UsageError(f"jaxqa convert: error: --to {to!r}: jaxqa (the default) or hf")
        return to, argv[:i] + rest
    return "jaxqa", argv


def command(argv: list[str]) -> tuple[str, str, list[str]]:
    """The module that runs this command line, the name its usage line shows, and its arguments."""
    if not argv or argv[0] not in VERBS:
        verb = repr(argv[0]) if argv else "no verb"
        raise UsageError(f"jaxqa: error: {verb} is not a verb: one of {', '.join(VERBS)} (jaxqa --help)")
    verb, rest = argv[0], argv[1:]
    module, prog = VERBS[verb][0], f"jaxqa {verb}"
    if verb == "data":
        if rest[:1] != ["convert"]:
            raise UsageError(f"jaxqa data: error: {' '.join(rest[:1]) or 'nothing'!r}: the data verb is `convert`")
        prog, rest = "jaxqa data convert", rest[1:]
    if verb == "convert":
        to, rest = direction(rest)
        if to == "hf":
            module, prog = TO_HF, "jaxqa convert --to hf"
    return module, prog, rest


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(HELP)
        return 0
    if not argv:
        print(HELP, file=sys.stderr)
        return 2
    try:
        module, prog, rest = command(argv)
    except UsageError as err:
        print(err, file=sys.stderr)
        return 2
    return importlib.import_module(module).main(rest, prog=prog)
