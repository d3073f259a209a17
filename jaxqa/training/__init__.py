"""What `python -m jaxqa.train` is made of: its settings and recipes, the batches
of every step, the optimizers, the train step and the run folder."""
