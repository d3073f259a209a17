"""What `python -m jaxqa.train` is made of: its settings (one group per phase)
and recipes, and the phases of a run, each in its module: the processes and
the mesh (`devices`), the model and the teacher (`model`), the data and the
batch of every step (`batches`), the optimization plan (`plan`), the train
state and its layout (`state`), resumed or fresh (`resume`), the train step
(`step`), the loop (`loop`) and its hooks (`hooks`), the end of a run
(`finish`); with the optimizers, pruning and the run folder they use."""
