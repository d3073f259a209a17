"""Windows in, logits out: the one engine that the pipeline, evaluation and the
server run a model through, whatever runs it.

A `Runtime` runs one batch of windows of one padded shape: a span model's
compiled forward under XLA (`Compiled`), or an export under ONNX Runtime or the
LiteRT interpreter (`jaxqa.export.runtime`). The `Engine` feeds it: it sorts
windows by length and cuts batches of consecutive windows, at most the largest
batch size each, padded to the shortest length bucket that holds the batch's
longest window and to the smallest batch size that holds its rows. A batch
closes early where the windows reach a longer bucket and its rows are a batch
size already (so that closing pads no rows), so that few tokens run as padding
while each runtime compiles at most one program per (length, batch size).
Batches are dispatched without waiting: the next one is padded while one runs.

What a window computes does not depend on the length or batch it was padded
to (docs/design.md, padding invariance): positions past the length a window
ran at get logit 0, which decoding never reads.
"""

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

import jax
import numpy as np
from jax.sharding import Mesh

from jaxqa import models, sharding
from jaxqa.errors import Error
from jaxqa.models.layers import bfloat16_bits, bfloat16_values
from jaxqa.squad import buckets


class Runtime(Protocol):
    """What runs a batch of windows: token ids, attention mask and token types,
    each int32 (B, T), -> start and end logits, each float32 (B, T), as arrays
    or jax arrays still being computed. `traces` counts the programs it has
    compiled (one per input shape; 0 for runtimes that compile none); `name`
    says what runs it: "xla", "onnx" or "litert".

    A runtime takes calls from several threads at once (a server's, or a
    pipeline shared by a thread pool), each given the logits of its own
    windows, as a call alone would be."""

    name: str

    @property
    def traces(self) -> int: ...

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray) -> Any: ...


class Compiled:
    """The XLA runtime: a span module's compiled forward over its `params`,
    which it holds one layer per name, as the forward reads them in place
    (`models.Forward`), and its bfloat16 weights as their bits
    (`layers.bfloat16_bits`).

    On one device the batches go as host arrays, so that every user of the same
    module (a loaded model, its pipeline, evaluations during training) runs the
    same compiled programs (`models.forward`); on a mesh of several devices
    they are split over its data axis, and with several processes the logits
    are replicated, so that every process can read them. A jitted function
    runs calls from several threads at once."""

    name = "xla"

    def __init__(self, module, params, mesh: Mesh | None = None):
        out = sharding.replicated(mesh) if mesh is not None and jax.process_count() > 1 else None
        self.forward = models.forward(module, out)
        self.params = self.forward.held(bfloat16_bits(params))
        self._in = None if mesh is None or mesh.size == 1 else sharding.batch_sharding(mesh, 2)

    @property
    def model_params(self) -> dict:
        """The parameters as the module holds them: runs of like layers stacked, bfloat16 as itself."""
        return bfloat16_values(self.forward.model_params(self.params))

    @property
    def traces(self) -> int:
        return self.forward.traces

    def __call__(self, input_ids, attention_mask, token_type_ids):
        batch = [
            np.asarray(a) if self._in is None else sharding.from_host(np.asarray(a), self._in)
            for a in (input_ids, attention_mask, token_type_ids)
        ]
        return self.forward(self.params, *batch)


class Engine:
    """Windows (N, L) in, start and end logits (N, L) out, as numpy, through a
    `Runtime` over compiled length buckets (`seq_buckets`) and batch sizes."""

    def __init__(self, runtime: Runtime, seq_buckets: Sequence[int], batch_sizes: Sequence[int]):
        if min(batch_sizes) < 1:
            raise Error(f"batch_size={max(batch_sizes)} must be at least 1")
        self.runtime = runtime
        self.seq_buckets = tuple(sorted(set(seq_buckets)))
        self.batch_sizes = tuple(sorted(set(batch_sizes)))

    @property
    def traces(self) -> int:
        return self.runtime.traces

    def warm_up(self, seq_buckets: Iterable[int] | None = None, batch_sizes: Iterable[int] | None = None) -> None:
        """Compiles the programs of these buckets (all of them by default) ahead of the first windows."""
        lengths = self.seq_buckets if seq_buckets is None else tuple(seq_buckets)
        sizes = self.batch_sizes if batch_sizes is None else tuple(batch_sizes)
        if not set(lengths) <= set(self.seq_buckets) or not set(sizes) <= set(self.batch_sizes):
            raise Error(f"the buckets are lengths {self.seq_buckets} and batch sizes {self.batch_sizes}")
        for length in lengths:
            for size in sizes:
                zeros = np.zeros((size, length), np.int32)
                jax.block_until_ready(self.runtime(zeros, zeros, zeros))

    def __call__(self, input_ids, attention_mask, token_type_ids) -> tuple[np.ndarray, np.ndarray]:
        """The start and end logits of every window, (N, L) each."""
        return self._run((input_ids, attention_mask, token_type_ids), np.arange(len(input_ids)))

    def stream(self, input_ids, attention_mask, token_type_ids, chunk: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The logits `chunk` windows at a time, in order: only a chunk's are held at once."""
        for begin in range(0, len(input_ids), chunk):
            rows = np.arange(begin, min(begin + chunk, len(input_ids)))
            yield self._run((input_ids, attention_mask, token_type_ids), rows)

    def batches(self, lengths: np.ndarray) -> list[tuple[np.ndarray, int, int]]:
        """(rows, padded length, padded batch size) of each batch of windows of these real lengths."""
        if lengths.max(initial=0) > self.seq_buckets[-1]:
            raise Error(f"windows of {lengths.max()} tokens do not fit the largest bucket, {self.seq_buckets[-1]}")
        order = np.argsort(lengths, kind="stable")
        widths = buckets.fit(self.seq_buckets, lengths[order])
        cut, first = [], 0
        for i in range(1, len(order) + 1):
            rows = i - first
            at_boundary = i == len(order) or widths[i] != widths[i - 1]
            if rows == self.batch_sizes[-1] or i == len(order) or (at_boundary and rows in self.batch_sizes):
                cut.append((order[first:i], int(widths[i - 1]), buckets.fit(self.batch_sizes, rows)))
                first = i
        return cut

    def _run(self, arrays: tuple, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n, full = len(rows), arrays[0].shape[1]
        running = []
        for picked, width, size in self.batches(np.asarray(arrays[1])[rows].sum(axis=1)):
            # Padding rows are all-masked; their logits are dropped.
            padded = [np.zeros((size, width), np.int32) for _ in arrays]
            for block, array in zip(padded, arrays):
                block[: len(picked)] = array[rows[picked], :width]
            running.append((picked, width, self.runtime(*padded)))
        start, end = np.zeros((n, full), np.float32), np.zeros((n, full), np.float32)
        for picked, width, logits in running:
            batch_start, batch_end = jax.device_get(logits)
            start[picked, :width] = batch_start[: len(picked)]
            end[picked, :width] = batch_end[: len(picked)]
        return start, end
