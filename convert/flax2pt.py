"""Exports a jaxqa checkpoint folder to a Hugging Face PyTorch folder.

    python convert/flax2pt.py SRC OUT

OUT holds config.json, model.safetensors and the tokenizer files, and loads with
`transformers.AutoModelForQuestionAnswering.from_pretrained(OUT)`.
"""

import argparse
import json
import sys
from pathlib import Path

from safetensors.numpy import save_file

from jaxqa import hf_weights, pretrained
from jaxqa.hf_weights import ConversionError


def export(src, out, overwrite: bool = False) -> Path:
    model = pretrained.load_pretrained(src)
    with pretrained.atomic_folder(out, overwrite) as tmp:
        state = hf_weights.params_to_hf(model.model_type, model.config, model.params)
        save_file(state, tmp / "model.safetensors", metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(model.config.to_hf(), indent=2) + "\n")
        pretrained.copy_tokenizer(model.folder, tmp)
    return Path(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="jaxqa checkpoint folder")
    parser.add_argument("out", help="Hugging Face folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    args = parser.parse_args(argv)
    try:
        export(args.src, args.out, args.overwrite)
    except (ConversionError, FileExistsError) as err:
        print(f"flax2pt: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
