"""jaxqa: extractive question answering with compact BERT-family encoders in JAX."""

from jaxqa.pretrained import Pretrained, load_pretrained, save_pretrained

__all__ = ["Pretrained", "load_pretrained", "save_pretrained"]
