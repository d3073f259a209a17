"""What the benchmark scripts share, one module per concern:

- paths: where the checkout, SQuAD, the records and the benchmark weights are;
- inputs: random SQuAD-shaped batches and real SQuAD dev questions;
- same_weights: the same weights for jaxqa and for `transformers`;
- train_steps: fresh train states and compiled train steps, as `jaxqa.train` builds them;
- gpu_recipe: the model and train step of jaxqa's side in the GPU comparisons with PyTorch;
- fine_tuning: `jaxqa.train` runs of the real MiniLM, and their scores;
- sides: the sides a latency benchmark compares, each in a process of its own, one question at a time;
- hf_server: a FastAPI server around the `transformers` pipeline, run as a script, that cpu/serve.py loads;
- timing: timing in turns, medians, the device's matmul rate;
- records: the record every script writes to benchmarks/results/.

A script puts benchmarks/ on `sys.path` and imports what it needs
(`from lib import paths, records`); no script imports another.

The measured processes of cpu/encoder_core.py import paths, inputs, records,
same_weights and sides with an older jaxqa on the path, which lacks today's
train-state and model APIs: these modules need none of them at import time,
and train_steps, fine_tuning and records import jaxqa inside the functions
that use it.
"""
