"""jaxqa: extractive question answering with compact BERT-family encoders in JAX."""

from jaxqa.checkpoint import save_pretrained
from jaxqa.errors import Error
from jaxqa.pipeline import pipeline
from jaxqa.pretrained import Pretrained, load_pretrained, open_model

__all__ = ["Error", "Pretrained", "load_pretrained", "open_model", "pipeline", "save_pretrained"]
