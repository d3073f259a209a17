"""Exports a jaxqa checkpoint folder to a Hugging Face PyTorch folder.

    python convert/flax2pt.py SRC OUT [--overwrite] [--pad]

OUT holds config.json, model.safetensors and the tokenizer files, and loads with
`transformers.AutoModelForQuestionAnswering.from_pretrained(OUT)`. An installed
jaxqa has the same command as `jaxqa-flax2pt`.
"""

import sys

from jaxqa.checkpoint import flax2pt_main as main

if __name__ == "__main__":
    sys.exit(main())
