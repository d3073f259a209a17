"""SqueezeBERT on SQuAD: sequence 384, doc stride 128, batch 32, 2 epochs, 10%
warmup, LAMB as in SqueezeBERT's own training.

Only what differs from the defaults of `jaxqa.training.settings.Settings`."""

from jaxqa.configs import tiny


def get_config(arg: str = "") -> dict:
    return tiny() if arg == "tiny" else dict(init="squeezebert/squeezebert-uncased")
