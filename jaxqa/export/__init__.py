"""Models that leave jaxqa: a checkpoint written as an ONNX model that ONNX
Runtime serves or a LiteRT model that the LiteRT interpreter serves
(`jaxqa export`, `jaxqa-export`, `python -m jaxqa.export`), and served back
through jaxqa's own featurizing and decoding.

- `format`: what an export folder holds, its file names, signatures and record;
- `program`: the program an export writes, traced as the export asks;
- `graph`: a jaxpr as an ONNX graph, op by op, its batch and sequence free;
- `litert`: the program as a LiteRT model, one signature per window length;
- `write`: a checkpoint folder to an export folder (float32, or int8), and the command;
- `runtime`: an export folder as a model that `jaxqa.pipeline`, `jaxqa.predict`
  and `jaxqa.evaluate` run (it imports none of the writer's code).

The program exported is the one jaxqa runs (`SpanModel`), its layers read one
by one, so that a compact model keeps each layer's own heads and widths.
Needs the optional extra `pip install "jaxqa[onnx]"` or `"jaxqa[litert]"`.
"""
