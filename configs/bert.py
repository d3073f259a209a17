"""BERT-base on SQuAD: the BERT paper's fine-tuning recipe (sequence 384, doc
stride 128, batch 32, 2 epochs, 10% warmup), trained with LAMB.

Only what differs from the defaults of `jaxqa.training.settings.Settings`."""

from jaxqa.configs import tiny


def get_config(arg: str = "") -> dict:
    return tiny() if arg == "tiny" else dict(init="bert-base-uncased")
