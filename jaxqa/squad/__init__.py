"""The SQuAD task without JAX: reading the data (`examples`), the tokenizer,
sliding windows (`features`), logits to answers (`decode`) and the official
metric (`metric`)."""
