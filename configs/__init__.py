"""The shipped training recipes, one module per family. Each has
`get_config(arg)`: the settings that differ from `Settings`' defaults, for the
full recipe (arg "") or its small `tiny` variant (a tiny random-weight model on
short windows, for tests and a first try on a laptop)."""

VARIANTS = ("", "tiny")


def tiny() -> dict:
    """Every family's tiny variant: `--config <model>:tiny --tokenizer DIR --train-file F`."""
    return dict(
        size="tiny",
        init="random",
        max_seq_length=64,
        doc_stride=16,
        max_query_length=16,
        batch_size=16,
        eval_batch_size=16,
        precision="fp32",
        log_every=1,
        length_step=16,
    )
