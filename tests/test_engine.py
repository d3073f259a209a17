"""The engine from windows to logits, over a stand-in runtime: how it cuts and
pads batches, and that every window's logits come back in its own place."""

import numpy as np
import pytest

from jaxqa.engine import Engine
from jaxqa.errors import Error


class Echo:
    """A runtime whose start logits are each window's token ids and end logits
    its mask times 10, so that where each window went can be read back."""

    name, traces = "echo", 0

    def __init__(self):
        self.shapes: list[tuple[int, int]] = []

    def __call__(self, input_ids, attention_mask, token_type_ids):
        self.shapes.append(input_ids.shape)
        return input_ids.astype(np.float32), 10.0 * attention_mask.astype(np.float32)


def windows(lengths, full: int = 96):
    """Windows (N, full) of the given real lengths; window i's tokens are i + 1."""
    mask = (np.arange(full)[None] < np.array(lengths)[:, None]).astype(np.int32)
    ids = mask * (np.arange(len(lengths))[:, None] + 1)
    return ids.astype(np.int32), mask, np.zeros_like(mask)


def test_every_window_comes_back_in_its_place_and_padding_gets_zero():
    runtime = Echo()
    engine = Engine(runtime, (32, 64, 96), (1, 2, 4))
    lengths = [90, 10, 40, 33, 7, 64, 65, 12]
    ids, mask, types = windows(lengths)
    start, end = engine(ids, mask, types)
    np.testing.assert_array_equal(start, ids)  # real tokens where they were; 0 wherever a window was padded
    np.testing.assert_array_equal(end, 10.0 * mask)
    assert all(size in (1, 2, 4) and width in (32, 64, 96) for size, width in runtime.shapes)


def test_batches_are_cut_from_windows_sorted_by_length():
    engine = Engine(Echo(), (32, 64, 96), (1, 2, 4))
    cut = engine.batches(np.array([90, 10, 40, 33, 7, 64, 65, 12]))
    lengths = np.array([90, 10, 40, 33, 7, 64, 65, 12])
    # Sorted: 7 10 12 | 33 40 64 | 65 90. Three rows of bucket 32 are no batch
    # size, so that batch takes the next window too (padded to 64) rather
    # than run with an empty row; four rows close it.
    assert [(list(lengths[rows]), width, size) for rows, width, size in cut] == [
        ([7, 10, 12, 33], 64, 4),
        ([40, 64], 64, 2),
        ([65, 90], 96, 2),
    ]


def test_one_batch_size_cuts_consecutive_windows_as_evaluation_does():
    engine = Engine(Echo(), (32, 64, 96), (4,))
    cut = engine.batches(np.array([90, 10, 40, 33, 7, 64]))
    assert [(len(rows), width, size) for rows, width, size in cut] == [(4, 64, 4), (2, 96, 4)]


def test_a_stream_gives_the_same_logits_a_chunk_at_a_time():
    engine = Engine(Echo(), (32, 64, 96), (2,))
    ids, mask, types = windows([90, 10, 40, 33, 7, 64, 65])
    chunks = list(engine.stream(ids, mask, types, chunk=3))
    assert [len(start) for start, _ in chunks] == [3, 3, 1]
    np.testing.assert_array_equal(np.concatenate([start for start, _ in chunks]), ids)


def test_windows_longer_than_the_largest_bucket_are_refused():
    engine = Engine(Echo(), (32, 64), (1,))
    with pytest.raises(Error, match="do not fit the largest bucket, 64"):
        engine(*windows([70], full=96))
