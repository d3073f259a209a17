"""jaxqa: extractive question answering with compact BERT-family encoders in JAX."""

from jaxqa.checkpoint import Pretrained, load_pretrained, save_pretrained
from jaxqa.errors import Error
from jaxqa.pipeline import pipeline

__all__ = ["Error", "Pretrained", "load_pretrained", "pipeline", "save_pretrained"]
