"""Converts a Hugging Face PyTorch checkpoint to a jaxqa checkpoint folder.

    python convert/pt2flax.py SRC OUT [--overwrite] [--seed N] [--compact]

SRC is a local folder (config.json + model.safetensors or pytorch_model.bin,
tokenizer files) or, when online, a hub id. OUT is written whole or not at all.
An installed jaxqa has the same command as `jaxqa-pt2flax`.
"""

import argparse
import logging
import sys
import time

from jaxqa.checkpoint import open_checkpoint, save_pretrained
from jaxqa.errors import Error, log_to
from jaxqa.models import compact
from jaxqa.models.convert import ConversionError

log = logging.getLogger("jaxqa.convert")


def main(argv=None, prog: str = "pt2flax") -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Converts a Hugging Face PyTorch checkpoint to a "
        "jaxqa checkpoint folder, written whole or not at all.",
    )
    parser.add_argument(
        "src",
        help="Hugging Face folder (config.json, model.safetensors or pytorch_model.bin, tokenizer files) or hub id",
    )
    parser.add_argument("out", help="jaxqa checkpoint folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    parser.add_argument("--seed", type=int, default=0, help="seed of a fresh span head, when SRC has none")
    parser.add_argument(
        "--compact",
        action="store_true",
        help="BERT: remove the heads and feed-forward units that a "
        "pruned SRC zeroed out (as block-pruned checkpoints hold them), exactly",
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        source = open_checkpoint(args.src)
        if args.compact and source.model_type != "bert":
            raise ConversionError(f"--compact: {args.src} is a {source.model_type} model; compaction is for bert ones")
        with log_to(sys.stderr):
            config, params = source.config, source.read_params(args.seed)
            if args.compact:
                config, params = compact.compact(config, params)
                log.info(f"compact: {compact.describe(compact.report(source.config, config))}")
            save_pretrained(
                args.out, source.model_type, config, params, source.folder, args.overwrite, source=source.folder
            )
    except Error as err:
        print(f"pt2flax: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({source.model_type}) in {time.perf_counter() - start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
