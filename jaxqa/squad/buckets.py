"""Padded lengths: windows of different lengths run in a few padded shapes, each
compiled once, so that little of what is computed is padding. Training batches,
evaluation and the pipeline pad to these."""

from collections.abc import Sequence

import numpy as np

# Multiples of this many tokens are the lengths training and evaluation pad to:
# on SQuAD 1.1 train's 384-token windows, over half of them padding, batches
# padded this way are mostly real tokens (padding_share and real_share_grouped in
# benchmarks/results/length_speed_cpu.json); steps of 128 pad more at half the
# programs to compile, steps of 32 less at twice as many.
LENGTH_STEP = 64


def widths(max_len: int, step: int) -> tuple[int, ...]:
    """The padded lengths: the multiples of `step` below `max_len`, and `max_len`
    itself; `(max_len,)` alone when step is 0."""
    return (*range(step, max_len, step), max_len) if step else (max_len,)


def fit(buckets: Sequence[int], size):
    """The smallest of the (sorted) `buckets` that holds `size`, for an int or an array of them."""
    found = np.asarray(buckets)[np.searchsorted(buckets, size)]
    return int(found) if np.ndim(found) == 0 else found
