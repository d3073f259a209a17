"""Training and evaluation data for `jaxqa.train`: SQuAD from a local JSON file
or the hub, as features, and the batch of every step.

The order of the training features is a function of (seed, epoch) alone, and a
step's batch a function of the step, so a resumed run reads exactly the batches
an uninterrupted one would, whatever the number of processes.
"""

import contextlib
import dataclasses
import functools
from pathlib import Path

import numpy as np

from jaxqa import squad
from jaxqa.features import EvalFeatures, FeatureSettings, TrainFeatures, featurize_eval, featurize_train, load_eval_features, load_train_features
from jaxqa.tokenizer import load_tokenizer

HUB_DATASETS = ("squad", "squad_v2")
# Arrays of a training batch and their rank per sequence-batch.
TRAIN_NDIMS = {"input_ids": 2, "attention_mask": 2, "token_type_ids": 2, "start_positions": 1, "end_positions": 1}


class DataError(ValueError):
    """Data that cannot be read; the message names the flag or file."""


@dataclasses.dataclass(frozen=True)
class EvalSet:
    data: squad.SquadData  # the examples and the official articles they come from
    features: EvalFeatures

    @property
    def with_negatives(self) -> bool:
        """SQuAD 2.0 handling (a null answer may win) follows the data."""
        return any(example.is_impossible for example in self.data.examples)


def read(source: str, split: str, flag: str) -> squad.SquadData:
    if source in HUB_DATASETS and not Path(source).exists():
        try:
            return squad.read_hub(source, split)
        except Exception as err:  # offline, or no `datasets` cache
            raise DataError(f"{flag} {source}: could not load the hub dataset ({type(err).__name__}); "
                            f"point {flag} at a local SQuAD JSON file, e.g. {flag} ../shared/squad/"
                            f"{'train' if split == 'train' else 'dev'}-v1.1.json") from None
    if not Path(source).is_file():
        raise DataError(f"{flag} {source}: no such file")
    return squad.read_squad(source)


@contextlib.contextmanager
def blame(flag: str):
    """Turns a data problem (bad SQuAD JSON, a question longer than the window) into a DataError naming `flag`."""
    try:
        yield
    except ValueError as err:  # SquadFormatError included
        raise DataError(f"{flag}: {err}") from None


def _settings(s) -> FeatureSettings:
    return FeatureSettings(s.max_seq_length, s.doc_stride, s.max_query_length)


def train_features(s, tokenizer_dir: Path, say) -> TrainFeatures:
    with blame("--train-file"):
        return _train_features(s, tokenizer_dir, say)


def _train_features(s, tokenizer_dir: Path, say) -> TrainFeatures:
    if Path(s.train_file).is_file() and not s.max_train_examples:
        return load_train_features(s.train_file, tokenizer_dir, _settings(s))  # cached on disk
    examples = read(s.train_file, "train", "--train-file").examples
    if s.max_train_examples:
        examples = examples[: s.max_train_examples]
    say(f"training on {len(examples)} questions from {s.train_file}")
    return featurize_train(examples, load_tokenizer(tokenizer_dir), _settings(s))


def eval_set(s, tokenizer_dir: Path, say) -> EvalSet:
    with blame("--eval-file"):
        return _eval_set(s, tokenizer_dir, say)


def _eval_set(s, tokenizer_dir: Path, say) -> EvalSet:
    data = read(s.eval_file, "validation", "--eval-file")
    if s.max_eval_examples:
        examples = data.examples[: s.max_eval_examples]
        data = dataclasses.replace(data, examples=examples, articles=squad.articles_from_examples(examples))
        features = featurize_eval(examples, load_tokenizer(tokenizer_dir), _settings(s))
    elif Path(s.eval_file).is_file():
        features = load_eval_features(s.eval_file, tokenizer_dir, _settings(s))
    else:
        features = featurize_eval(data.examples, load_tokenizer(tokenizer_dir), _settings(s))
    say(f"evaluating on {len(data.examples)} questions from {s.eval_file}")
    return EvalSet(data, features)


@functools.lru_cache(maxsize=2)
def _order(seed: int, epoch: int, count: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(count)


def train_batch(features: TrainFeatures, step: int, s, process_index: int, process_count: int) -> dict[str, np.ndarray]:
    """This process's rows of the batch of `step`: arrays (A, B / A / P, ...) for
    A micro-batches of a global batch of B sequences over P processes."""
    count = len(features.input_ids)
    epoch, position = divmod(step, count // s.batch_size)
    rows = _order(s.seed, epoch, count)[position * s.batch_size : (position + 1) * s.batch_size]
    rows = rows.reshape(s.grad_accum, -1)  # (A, B / A)
    share = rows.shape[1] // process_count
    rows = rows[:, process_index * share : (process_index + 1) * share]
    return {key: getattr(features, key)[rows] for key in TRAIN_NDIMS}
