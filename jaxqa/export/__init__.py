"""Models that leave jaxqa: a checkpoint written as an ONNX model that ONNX
Runtime serves (`jaxqa-export`, `python -m jaxqa.export`), and served back
through jaxqa's own featurizing and decoding.

- `graph`: a jaxpr as an ONNX graph, op by op, its batch and sequence free;
- `write`: a checkpoint folder to an export folder (float32, or int8), and the command;
- `runtime`: an export folder as a model that `jaxqa.pipeline`, `jaxqa.predict`
  and `jaxqa.evaluate` run.

The program exported is the one jaxqa runs (`SpanModel`), its layers unrolled,
so that a compact model keeps each layer's own heads and widths.
Needs the optional extra `pip install "jaxqa[onnx]"`.
"""
