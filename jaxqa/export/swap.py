"""Functions of jaxqa's models swapped, while a span model is traced for
export, for equivalent ones that an export's runtime runs better.

`swapped({f: g})` makes every reference to `f` in jaxqa's model modules (and
in `layers.ACTIVATIONS`) a reference to `g` for the duration of a `with`
block, and restores them after. The swaps compute what the originals compute;
the export tests hold their logits to jaxqa's.
"""

import contextlib
import math
import sys
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxqa.models import layers


@contextlib.contextmanager
def swapped(swaps: dict[Callable, Callable]):
    changed = []  # (namespace, name, original)
    namespaces = [vars(m) for name, m in sys.modules.items() if name.startswith("jaxqa.models")]
    for namespace in [*namespaces, layers.ACTIVATIONS]:
        for name, value in list(namespace.items()):
            if callable(value) and value in swaps:
                changed.append((namespace, name, value))
                namespace[name] = swaps[value]
    try:
        yield
    finally:
        for namespace, name, value in changed:
            namespace[name] = value


def matmul_attention(q, k, v, attention_mask):
    """`layers.fused_attention` written as BERT's exporters write it, which
    ONNX Runtime and LiteRT know: per (batch, head) the scores q k^T scaled,
    the padding masked by adding float32's lowest, softmax, and the weighted
    sum of values; (B, T, N, H) -> (B, T, N, H)."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    queries = q.transpose(0, 2, 1, 3)  # (B, N, T, H)
    keys = k.transpose(0, 2, 3, 1)  # (B, N, H, S)
    values = v.transpose(0, 2, 1, 3)  # (B, N, S, H)
    bias = jnp.where(attention_mask[:, None, None, :] > 0, 0.0, jnp.finfo(jnp.float32).min)  # (B, 1, 1, S)
    probs = jax.nn.softmax(jnp.matmul(queries, keys) * scale + bias, axis=-1)  # (B, N, T, S)
    return jnp.matmul(probs, values).transpose(0, 2, 1, 3)
