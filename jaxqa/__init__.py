"""jaxqa: extractive question answering with compact BERT-family encoders in JAX."""

from jaxqa.pipeline import pipeline
from jaxqa.pretrained import Pretrained, load_pretrained, save_pretrained

__all__ = ["Pretrained", "load_pretrained", "pipeline", "save_pretrained"]
