"""Converts a Hugging Face PyTorch checkpoint to a jaxqa checkpoint folder.

    python convert/pt2flax.py SRC OUT [--overwrite] [--seed N] [--compact]

SRC is a local folder (config.json + model.safetensors or pytorch_model.bin,
tokenizer files) or, when online, a hub id. OUT is written whole or not at all.
An installed jaxqa has the same command as `jaxqa-pt2flax`.
"""

import sys

from jaxqa.checkpoint import pt2flax_main as main

if __name__ == "__main__":
    sys.exit(main())
