"""SQuAD examples -> fixed-length model inputs: sliding windows over each context.

Each example becomes one or more windows `[CLS] question [SEP] context part [SEP]`,
padded to `max_seq_length`. The windows are exactly those of the Hugging Face fast
tokenizer called as `run_qa.py` and the question-answering pipeline call it:
`tokenizer(question, context, truncation="only_second", max_length=L, stride=S,
return_overflowing_tokens=True, padding="max_length")`, so `doc_stride` is the
number of context tokens shared by consecutive windows. Unlike run_qa.py, a
question longer than `max_query_length` tokens keeps only its first tokens.

Featurising a whole training set takes seconds; `train_features` and
`eval_features` keep the result in an on-disk cache keyed by the data file, the
tokenizer and the settings; an entry that cannot be read is set aside as
`NAME.damaged` and the features are made again.
"""

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from itertools import chain
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tokenizers import Encoding, Tokenizer
from tqdm import tqdm

from jaxqa.errors import Error
from jaxqa.squad.examples import Example, SquadData

log = logging.getLogger(__name__)


class FeatureError(Error):
    """Examples or a tokenizer that cannot make windows; the message names the question or token."""


# Bump when the arrays written to the cache change meaning, so old entries are not read.
FORMAT_VERSION = 1
# Questions featurised at a time (`_chunks`), and how many show a progress bar.
CHUNK = 4096
PROGRESS_EXAMPLES = 50_000


@dataclasses.dataclass(frozen=True)
class FeatureSettings:
    max_seq_length: int = 384  # L: tokens per window, special tokens included
    doc_stride: int = 128  # context tokens shared by consecutive windows
    max_query_length: int = 64  # question tokens kept; the rest are dropped

    def check(self, spelled: Callable[[str], str] = str) -> "FeatureSettings":
        """These settings if they make windows; else a `FeatureError` naming the
        one at fault as `spelled` gives a field's name (a command's flag, a
        function's argument). Every command and the pipeline check them so."""
        if self.max_seq_length < 8:
            raise FeatureError(f"{spelled('max_seq_length')} {self.max_seq_length}: must be at least 8")
        if self.max_query_length < 1:
            raise FeatureError(f"{spelled('max_query_length')} {self.max_query_length}: must be at least 1")
        if not 0 <= self.doc_stride < self.max_seq_length:
            raise FeatureError(
                f"{spelled('doc_stride')} {self.doc_stride}: must be at least 0 and below "
                f"{spelled('max_seq_length')} {self.max_seq_length}"
            )
        return self


# eq=False: the generated __eq__ would compare arrays and fail.
@dataclasses.dataclass(frozen=True, eq=False)
class TrainFeatures:
    input_ids: np.ndarray  # (N, L) int32
    attention_mask: np.ndarray  # (N, L) int32
    token_type_ids: np.ndarray  # (N, L) int32
    example_index: np.ndarray  # (N,) int32: the example each window comes from
    start_positions: np.ndarray  # (N,) int32: answer's first token; 0 ([CLS]) if not in the window
    end_positions: np.ndarray  # (N,) int32: answer's last token; 0 ([CLS]) if not in the window


@dataclasses.dataclass(frozen=True, eq=False)
class EvalFeatures:
    input_ids: np.ndarray  # (N, L) int32
    attention_mask: np.ndarray  # (N, L) int32
    token_type_ids: np.ndarray  # (N, L) int32
    example_index: np.ndarray  # (N,) int32, non-decreasing: an example's windows are adjacent
    offsets: np.ndarray  # (N, L, 2) int32: character span of the token in the context; -1 off the context


def featurize_train(examples: Sequence[Example], tokenizer: Tokenizer, settings: FeatureSettings) -> TrainFeatures:
    """Windows with answer labels, as Hugging Face `run_qa.py` labels them.

    The label is the first answer's token span when the answer lies wholly inside
    the window's context, else the [CLS] position 0 (also for unanswerable
    questions). One deliberate difference: when the answer starts in the window's
    last context token, `run_qa.py` walks past the context and labels the last
    position of the window; here the start is that last context token.
    """
    started = time.perf_counter()
    parts: list[tuple[np.ndarray, ...]] = []
    for begin, chunk in _chunks(examples):
        input_ids, attention_mask, token_type_ids, example_index, offsets = _windows(chunk, tokenizer, settings)
        start_char = np.array([ex.answer_starts[0] if ex.answer_starts else -1 for ex in chunk], np.int64)
        end_char = start_char + np.array([len(ex.answer_texts[0]) if ex.answer_texts else 0 for ex in chunk])
        labels = _token_span(offsets, start_char[example_index], end_char[example_index])
        parts.append((input_ids, attention_mask, token_type_ids, example_index + begin, *labels))
    features = TrainFeatures(*_joined(parts))
    _log_done(examples, features.input_ids, started)
    return features


def featurize_eval(
    examples: Sequence[Example], tokenizer: Tokenizer, settings: FeatureSettings, spelled: Callable[[str], str] = str
) -> EvalFeatures:
    """Windows with the offsets needed to map predicted tokens back to context text;
    a refusal names the settings as `spelled` gives them (as `FeatureSettings.check`)."""
    started = time.perf_counter()
    parts: list[tuple[np.ndarray, ...]] = []
    for begin, chunk in _chunks(examples):
        input_ids, attention_mask, token_type_ids, example_index, offsets = _windows(
            chunk, tokenizer, settings, spelled
        )
        parts.append((input_ids, attention_mask, token_type_ids, example_index + begin, offsets))
    features = EvalFeatures(*_joined(parts))
    _log_done(examples, features.input_ids, started)
    return features


def _joined(parts: list[tuple[np.ndarray, ...]]) -> list[np.ndarray]:
    """The chunks' arrays joined field by field, each chunk's array of a field
    let go once joined, so that the chunks and the whole are never all held twice."""
    fields = [list(arrays) for arrays in zip(*parts)]
    parts.clear()
    joined = []
    for arrays in fields:
        joined.append(np.concatenate(arrays))
        arrays.clear()
    return joined


def _chunks(examples: Sequence[Example]) -> Iterator[tuple[int, Sequence[Example]]]:
    """The examples CHUNK at a time, each with the index of its first (at least
    one chunk, maybe empty), under a progress bar from PROGRESS_EXAMPLES on.

    Featurising a chunk at a time holds the tokenizer's encodings of one chunk
    only, so that memory grows with the windows made, not with the data read;
    the windows are the same, since each example's are cut on their own."""
    with tqdm(total=len(examples), unit="question", disable=len(examples) < PROGRESS_EXAMPLES, desc="windows") as bar:
        for begin in range(0, max(len(examples), 1), CHUNK):
            chunk = examples[begin : begin + CHUNK]
            yield begin, chunk
            bar.update(len(chunk))


class _Tokens(NamedTuple):
    """The questions and the distinct contexts, tokenized once, their tokens laid end to end."""

    question_ids: np.ndarray  # all questions' tokens, flat
    question_start: np.ndarray  # (E,) where each example's question begins
    question_len: np.ndarray  # (E,) its tokens kept (max_query_length at most)
    context_ids: np.ndarray  # all distinct contexts' tokens, flat
    context_start: np.ndarray  # (C,)
    context_len: np.ndarray  # (C,)
    context_offsets: np.ndarray  # (all context tokens, 2): character span of each
    example_context: np.ndarray  # (E,) the distinct context of each example


def _tokens(examples: Sequence[Example], tokenizer: Tokenizer, max_query_length: int) -> _Tokens:
    # run_qa.py strips leading white space: some SQuAD questions have a lot of it.
    questions = tokenizer.encode_batch([ex.question.lstrip() for ex in examples], add_special_tokens=False)
    context_number: dict[str, int] = {}  # each distinct context, numbered in order of appearance
    example_context = np.array(
        [context_number.setdefault(ex.context, len(context_number)) for ex in examples], np.int64
    )  # (E,)
    contexts = tokenizer.encode_batch(list(context_number), add_special_tokens=False)
    question_ids, question_start, question_len = _flatten_ids(questions)
    question_len = np.minimum(question_len, max_query_length)  # a question keeps its first tokens
    context_ids, context_start, context_len = _flatten_ids(contexts)
    context_offsets = np.fromiter(
        chain.from_iterable(chain.from_iterable(e.offsets for e in contexts)), np.int32, count=2 * len(context_ids)
    ).reshape(-1, 2)
    return _Tokens(
        question_ids, question_start, question_len, context_ids, context_start, context_len, context_offsets,
        example_context,
    )  # fmt: skip


def _plain(tokenizer: Tokenizer) -> Tokenizer:
    """`tokenizer` without padding and truncation: a private copy where it has
    them (copying costs tens of milliseconds, so tokenizers from
    `load_tokenizer`, which have neither, are used as they are)."""
    if tokenizer.padding is None and tokenizer.truncation is None:
        return tokenizer
    tokenizer = Tokenizer.from_str(tokenizer.to_str())
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def _windows(
    examples: Sequence[Example], tokenizer: Tokenizer, settings: FeatureSettings, spelled: Callable[[str], str] = str
):
    """Tokenizes the questions and the distinct contexts, then cuts the windows.

    Returns input_ids, attention_mask, token_type_ids (N, L), example_index (N,)
    and offsets (N, L, 2) with -1 outside the context.

    A context is shared by about five questions in SQuAD, so it is tokenized once
    and its windows are cut here with array arithmetic instead of by the
    tokenizer's own `only_second` truncation, which would tokenize every
    question/context pair afresh (several times slower on the training set). The
    windows are the same: `tests/test_features.py` checks them against
    `transformers`.
    """
    length, stride = settings.max_seq_length, settings.doc_stride
    tokenizer = _plain(tokenizer)
    cls_id, sep_id = _bert_pair_template(tokenizer)
    pad_id = tokenizer.token_to_id("[PAD]")
    if pad_id is None:
        raise FeatureError("the tokenizer has no [PAD] token")
    t = _tokens(examples, tokenizer, settings.max_query_length)

    # Per example (E,): context tokens that fit in a window, and the step between windows.
    context_len = t.context_len[t.example_context]
    room = length - 3 - t.question_len  # 3: [CLS] and two [SEP]
    step = room - stride
    too_long = (context_len > room) & (step <= 0)
    if too_long.any():
        i = int(np.argmax(too_long))
        raise FeatureError(
            f"question {examples[i].id}: its {t.question_len[i]} tokens leave room for {room[i]} context tokens "
            f"per window, not more than {spelled('doc_stride')}={stride}; "
            f"lower {spelled('max_query_length')} or {spelled('doc_stride')}"
        )
    # As the fast tokenizer does: windows start every `step` tokens until one reaches the end.
    n_windows = np.where(context_len > room, 1 - (-(context_len - room) // np.maximum(step, 1)), 1)

    # Per window (N,): its example, its number k within the example, its context part.
    e = np.repeat(np.arange(len(examples), dtype=np.int32), n_windows)
    k = np.arange(len(e)) - np.repeat(np.cumsum(n_windows) - n_windows, n_windows)
    window_start = k * step[e]  # the window's first token, counted in its context
    c = np.minimum(room[e], context_len[e] - window_start)  # context tokens in the window
    input_ids, attention_mask, token_type_ids, offsets = _assembled(
        t, e, window_start, c, length, (cls_id, sep_id, pad_id)
    )
    return input_ids, attention_mask, token_type_ids, e, offsets


def _assembled(t: _Tokens, e: np.ndarray, window_start: np.ndarray, c: np.ndarray, length: int, special: tuple):
    """input_ids, attention_mask, token_type_ids and offsets (N, L) of the windows
    of examples `e` (N,), each [CLS] question [SEP] context part [SEP] padding,
    its context part the `c` tokens from `window_start`; `special` the ids of
    [CLS], [SEP] and [PAD]. The pieces are copied as runs of flat indices, never
    as per-token Python."""
    cls_id, sep_id, pad_id = special
    n, q = len(e), t.question_len[e]
    row = np.arange(n) * length  # flat index of each window's position 0
    question_at = _runs(row + 1, q)
    context_at = _runs(row + q + 2, c)
    context_from = _runs(t.context_start[t.example_context[e]] + window_start, c)
    input_ids = np.full((n, length), pad_id, np.int32)
    flat_ids = input_ids.reshape(-1)
    flat_ids[row] = cls_id
    flat_ids[question_at] = t.question_ids[_runs(t.question_start[e], q)]
    flat_ids[row + q + 1] = sep_id
    flat_ids[context_at] = t.context_ids[context_from]
    flat_ids[row + q + 2 + c] = sep_id
    position = np.arange(length)[None, :]
    attention_mask = (position <= (q + 2 + c)[:, None]).astype(np.int32)
    token_type_ids = ((position >= (q + 2)[:, None]) & (attention_mask == 1)).astype(np.int32)
    offsets = np.full((n, length, 2), -1, np.int32)
    offsets.reshape(-1, 2)[context_at] = t.context_offsets[context_from]
    return input_ids, attention_mask, token_type_ids, offsets


def _runs(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The ranges [starts[i], starts[i] + lengths[i]) concatenated into one index array."""
    within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(starts, lengths) + within


def _bert_pair_template(tokenizer: Tokenizer) -> tuple[int, int]:
    """The [CLS] and [SEP] ids, after checking the tokenizer pairs texts as BERT does."""
    probe = tokenizer.encode("a", "b")
    if probe.sequence_ids != [None, 0, None, 1, None] or probe.type_ids != [0, 0, 0, 1, 1]:
        raise FeatureError(f"expected the BERT pair template [CLS] A [SEP] B [SEP], got {probe.tokens}")
    if probe.ids[2] != probe.ids[4]:
        raise FeatureError(f"expected the same separator after both texts, got {probe.tokens}")
    return probe.ids[0], probe.ids[2]


def _flatten_ids(encodings: list[Encoding]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The token ids of all encodings, concatenated (T,), and per encoding its start and length."""
    lengths = np.fromiter(map(len, encodings), np.int64, count=len(encodings))
    # fromiter over one flat stream is several times faster than np.array on nested lists.
    ids = np.fromiter(chain.from_iterable(e.ids for e in encodings), np.int32, count=int(lengths.sum()))
    return ids, np.cumsum(lengths) - lengths, lengths


def _token_span(offsets: np.ndarray, start_char: np.ndarray, end_char: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Token positions of the character span [start_char, end_char) in each window.

    offsets: (N, L, 2) with -1 off the context; start_char, end_char: (N,), with
    start_char -1 for no answer. Returns start, end (N,) int32, both 0 where the
    span is not wholly inside the window's context.
    """
    context = offsets[..., 0] >= 0  # (N, L)
    length = context.shape[1]
    rows = np.arange(len(context))
    first = np.argmax(context, axis=1)  # (N,) first context token
    last = length - 1 - np.argmax(context[:, ::-1], axis=1)  # (N,) last context token
    inside = (
        (start_char >= 0)
        & context.any(axis=1)
        & (offsets[rows, first, 0] <= start_char)
        & (offsets[rows, last, 1] >= end_char)
    )
    # Offsets grow along the context, so counting tokens is enough: the start is
    # the last token starting at or before start_char, the end the first token
    # ending at or after end_char.
    start = first + np.sum(context & (offsets[..., 0] <= start_char[:, None]), axis=1) - 1
    end = first + np.sum(context & (offsets[..., 1] < end_char[:, None]), axis=1)
    return np.where(inside, start, 0).astype(np.int32), np.where(inside, end, 0).astype(np.int32)


def _log_done(examples: Sequence[Example], input_ids: np.ndarray, started: float) -> None:
    log.info(
        "featurised %d questions into %d windows in %.1f s",
        len(examples),
        len(input_ids),
        time.perf_counter() - started,
    )


# --- on-disk cache --------------------------------------------------------------


def default_cache_dir() -> Path:
    """`$JAXQA_CACHE`, else ~/.cache/jaxqa/features."""
    return Path(os.environ.get("JAXQA_CACHE") or Path.home() / ".cache" / "jaxqa" / "features")


def train_features(
    data: SquadData, tokenizer: Tokenizer, settings: FeatureSettings, cache_dir: str | Path | None = None
) -> TrainFeatures:
    """`featurize_train` of the data's examples, from the cache when it holds them."""
    return _cached(TrainFeatures, featurize_train, data, tokenizer, settings, cache_dir)


def eval_features(
    data: SquadData, tokenizer: Tokenizer, settings: FeatureSettings, cache_dir: str | Path | None = None
) -> EvalFeatures:
    """`featurize_eval` of the data's examples, from the cache when it holds them."""
    return _cached(EvalFeatures, featurize_eval, data, tokenizer, settings, cache_dir)


def cache_path(
    kind: str,
    data_fingerprint: str,
    tokenizer: Tokenizer,
    settings: FeatureSettings,
    cache_dir: str | Path | None = None,
) -> Path:
    """Where the features of `kind` ("TrainFeatures" or "EvalFeatures") are cached.

    The key hashes the data's fingerprint (its file's content), the tokenizer's
    full definition, every setting and FORMAT_VERSION, so a change to any of
    them misses the cache.
    """
    key = hashlib.sha256()
    key.update(
        json.dumps([FORMAT_VERSION, kind, dataclasses.asdict(settings), data_fingerprint], sort_keys=True).encode()
    )
    key.update(tokenizer.to_str().encode())
    return Path(cache_dir or default_cache_dir()) / f"{kind}-{key.hexdigest()}.npz"


def _cached(features_class, featurize, data: SquadData, tokenizer, settings, cache_dir):
    if data.fingerprint is None:  # hub data: nothing to key a cache entry by
        return featurize(data.examples, tokenizer, settings)
    path = cache_path(features_class.__name__, data.fingerprint, tokenizer, settings, cache_dir)
    if path.is_file():
        cached = _read_entry(features_class, path)
        if cached is not None:
            return cached
    features = featurize(data.examples, tokenizer, settings)
    try:
        _save_atomically(path, features)
    except OSError as err:  # a full disk, say: the cache only saves time
        log.warning(f"{path}: cannot cache the features ({err.strerror}); going on without the cache")
    return features


def _read_entry(features_class, path: Path):
    """The features cached at `path`; None for an entry that cannot be read (a
    truncated or foreign file), which is set aside as `NAME.damaged`, with a
    warning, to be featurised again, as a damaged checkpoint is."""
    try:
        with np.load(path) as stored:
            features = features_class(**{f.name: stored[f.name] for f in dataclasses.fields(features_class)})
    except Exception as err:  # numpy raises several types: BadZipFile, ValueError, KeyError, EOFError, OSError
        aside = path.with_name(path.name + ".damaged")
        with contextlib.suppress(OSError):  # a read-only cache: featurised again all the same
            os.replace(path, aside)
        log.warning(
            f"{path}: a damaged cache entry ({type(err).__name__}); set aside as {aside.name}, featurising again"
        )
        return None
    log.info(f"features from the cache {path}")
    return features


def _save_atomically(path: Path, features: TrainFeatures | EvalFeatures) -> None:
    # Written beside the entry and renamed into place, so that an interrupted
    # write never leaves a partial entry under the final name.
    path.parent.mkdir(parents=True, exist_ok=True)  # may raise OSError, as the rest
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **vars(features))
        os.chmod(temporary, 0o644)  # mkstemp makes it owner-only; others may share the cache
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
