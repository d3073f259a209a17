"""Converts a Hugging Face PyTorch checkpoint to a jaxqa checkpoint folder.

    python convert/pt2flax.py SRC OUT

SRC is a local folder (config.json + model.safetensors or pytorch_model.bin,
tokenizer files) or, when online, a hub id. OUT is written whole or not at all.
"""

import argparse
import sys
import time

from jaxqa import pretrained
from jaxqa.hf_weights import ConversionError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="Hugging Face folder or hub id")
    parser.add_argument("out", help="jaxqa checkpoint folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    parser.add_argument("--seed", type=int, default=0, help="seed of a fresh span head, when SRC has none")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        folder = pretrained.resolve(args.src)
        model_type, config, params = pretrained.from_hf_folder(folder, seed=args.seed)
        pretrained.save_pretrained(args.out, model_type, config, params, folder, overwrite=args.overwrite)
    except (ConversionError, FileExistsError) as err:
        print(f"pt2flax: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({model_type}) in {time.perf_counter() - start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
