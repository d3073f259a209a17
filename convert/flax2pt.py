"""Exports a jaxqa checkpoint folder to a Hugging Face PyTorch folder.

    python convert/flax2pt.py SRC OUT [--overwrite] [--pad]

OUT holds config.json, model.safetensors and the tokenizer files, and loads with
`transformers.AutoModelForQuestionAnswering.from_pretrained(OUT)`. An installed
jaxqa has the same command as `jaxqa-flax2pt`.
"""

import argparse
import sys

from jaxqa.checkpoint import export_hf
from jaxqa.errors import Error


def main(argv=None, prog: str = "flax2pt") -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Exports a jaxqa checkpoint folder to a Hugging "
        "Face folder that AutoModelForQuestionAnswering loads.",
    )
    parser.add_argument("src", help="jaxqa checkpoint folder")
    parser.add_argument("out", help="Hugging Face folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    parser.add_argument(
        "--pad",
        action="store_true",
        help="a pruned BERT: write its removed heads and feed-forward "
        "units back as zeros, at the full shape that transformers holds",
    )
    args = parser.parse_args(argv)
    try:
        export_hf(args.src, args.out, args.overwrite, args.pad)
    except Error as err:
        print(f"flax2pt: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
