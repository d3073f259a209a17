"""Training and evaluation data for `jaxqa.train`: SQuAD-like questions from any
source `jaxqa.squad.sources` reads, as features (`load_data`), and the batch of every step.

The order of the training features is a function of (seed, epoch) alone, and a
step's batch a function of the step, so a resumed run reads exactly the batches
an uninterrupted one would, whatever the number of processes. With a length step
the order groups windows of like length into batches, and each batch is cut to
the padded length (`jaxqa.buckets`) that holds its longest window.
"""

import dataclasses
import functools
import logging

import numpy as np
from tokenizers import Tokenizer

from jaxqa.squad import buckets, examples, features, sources
from jaxqa.squad.features import EvalFeatures, FeatureSettings, TrainFeatures
from jaxqa.training.settings import DataSettings, blame

log = logging.getLogger("jaxqa.train")

# Arrays of a training batch and their rank per sequence-batch.
TRAIN_NDIMS = {"input_ids": 2, "attention_mask": 2, "token_type_ids": 2, "start_positions": 1, "end_positions": 1}


@dataclasses.dataclass(frozen=True)
class EvalSet:
    data: examples.SquadData  # the examples and the official articles they come from
    features: EvalFeatures

    @property
    def with_negatives(self) -> bool:
        """SQuAD 2.0 handling (a null answer may win) follows the data."""
        return any(example.is_impossible for example in self.data.examples)


def read(
    source: str,
    split: str,
    max_examples: int,
    columns: sources.Columns = sources.DEFAULT_COLUMNS,
    skip_bad_rows: bool = False,
) -> examples.SquadData:
    """The first `max_examples` questions (0: all) of a data file or hub dataset (`jaxqa.squad.sources`)."""
    return sources.read(source, split, columns, skip_bad_rows).head(max_examples)


def eval_set(
    source: str,
    max_examples: int,
    tokenizer: Tokenizer,
    settings: FeatureSettings,
    columns: sources.Columns = sources.DEFAULT_COLUMNS,
    skip_bad_rows: bool = False,
) -> EvalSet:
    data = read(source, "validation", max_examples, columns, skip_bad_rows)
    return EvalSet(data, features.eval_features(data, tokenizer, settings))


@dataclasses.dataclass(frozen=True)
class Data:
    """What a run trains and evaluates on."""

    train: TrainFeatures
    train_digest: str | None  # of the training file's contents (None for a hub dataset)
    eval: EvalSet | None


def load_data(d: DataSettings, tokenizer: Tokenizer) -> Data:
    """--train-file's windows, and --eval-file's (if any), as `tokenizer` cuts them."""
    with blame("--train-file"):
        squad = read(d.train_file, "train", d.max_train_examples, d.columns, d.skip_bad_rows)
        train_set = features.train_features(squad, tokenizer, d.windows)
    eval_data = None
    if d.eval_file:
        with blame("--eval-file"):
            eval_data = eval_set(d.eval_file, d.max_eval_examples, tokenizer, d.windows, d.columns, d.skip_bad_rows)
        log.info(f"evaluating on {len(eval_data.data.examples)} questions from {d.eval_file}")
    return Data(train_set, squad.fingerprint, eval_data)


# Length-grouped batches: windows are sorted by length within groups of this many
# batches of the epoch's random order, then the group's batches are shuffled.
GROUP_BATCHES = 64


@functools.lru_cache(maxsize=1)
def lengths(train: TrainFeatures) -> np.ndarray:
    """Real tokens of each window (N,)."""
    return train.attention_mask.sum(axis=1)


@functools.lru_cache(maxsize=2)
def _order(train: TrainFeatures, seed: int, epoch: int, batch_size: int, length_step: int) -> np.ndarray:
    """The epoch's windows in batch order, (steps_per_epoch * batch_size,)."""
    count = len(train.input_ids)
    order = np.random.default_rng([seed, epoch]).permutation(count)[: count // batch_size * batch_size]
    if not length_step:
        return order
    group = batch_size * GROUP_BATCHES
    for begin in range(0, len(order), group):
        part = order[begin : begin + group]
        part = part[np.argsort(lengths(train)[part], kind="stable")].reshape(-1, batch_size)  # (G, B) by length
        order[begin : begin + group] = part[np.random.default_rng([seed, epoch, begin]).permutation(len(part))].ravel()
    return order


def step_rows(train: TrainFeatures, step: int, batch_size: int, seed: int, length_step: int) -> np.ndarray:
    """The windows of the global batch of `step`, (B,)."""
    epoch, position = divmod(step, len(train.input_ids) // batch_size)
    return _order(train, seed, epoch, batch_size, length_step)[position * batch_size : (position + 1) * batch_size]


def train_batch(
    train: TrainFeatures, rows: np.ndarray, grad_accum: int, length_step: int, process_index: int, process_count: int
) -> dict[str, np.ndarray]:
    """This process's share of the global batch `rows`: arrays (A, B / A / P, ...)
    for A = grad_accum micro-batches of B sequences over P processes, the
    windows cut to the shortest of `buckets.widths(L, length_step)` that holds
    the batch's longest."""
    width = buckets.fit(buckets.widths(train.input_ids.shape[1], length_step), lengths(train)[rows].max())
    rows = rows.reshape(grad_accum, -1)  # (A, B / A)
    share = rows.shape[1] // process_count
    rows = rows[:, process_index * share : (process_index + 1) * share]
    return {
        key: getattr(train, key)[rows] if ndim == 1 else getattr(train, key)[rows, :width]
        for key, ndim in TRAIN_NDIMS.items()
    }
