"""Start/end logits -> answer text, as Hugging Face `run_qa.py` and BERT's `run_squad.py` do it.

Per example, over all its windows: the `n_best_size` best start and end tokens of
each window are paired; a pair counts when both tokens are context tokens, the end
is not before the start and the span has at most `max_answer_length` tokens. Its
score is start_logit + end_logit and its text is the context between the start
token's first and the end token's last character.

For SQuAD 2.0 the null score of an example is start_logits[0] + end_logits[0] of
its window where that sum is smallest. `null_odds = null_score - best span score`
(what BERT writes to null_odds.json; the official metric takes it as the no-answer
probability to search its best threshold), and the prediction is "" when
null_odds > null_score_diff_threshold.

`AnswerCollector` takes the logits batch by batch and keeps only each example's
best spans, so a large evaluation set never holds all its logits in memory.
"""

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from jaxqa.features import EvalFeatures
from jaxqa.squad import Example


@dataclasses.dataclass(frozen=True)
class Candidate:
    text: str
    score: float  # start_logit + end_logit
    start_logit: float
    end_logit: float


@dataclasses.dataclass(frozen=True)
class Predictions:
    answers: dict[str, str]  # question id -> answer text; "" predicts "no answer"
    # question id -> null score minus the best span's score; +inf when no span was
    # valid. Higher means "no answer" is more likely.
    null_odds: dict[str, float]
    nbest: dict[str, list[Candidate]]  # question id -> best spans, best first; empty unless asked


# A span table (k, 5) has the columns: score, first and end character in the
# context, start logit, end logit.
_SCORE, _START_CHAR, _END_CHAR = 0, 1, 2


class AnswerCollector:
    """Receives the model's logits in feature order and turns them into answers.

    `examples` are those `features` were made from (`featurize_eval`).

    collector = AnswerCollector(examples, features)
    for start_logits, end_logits in batches:      # (B, L) each, in the order of `features`
        collector.add(start_logits, end_logits)
    predictions = collector.finish()
    """

    def __init__(
        self,
        examples: Sequence[Example],
        features: EvalFeatures,
        *,
        version_2_with_negative: bool = False,
        n_best_size: int = 20,
        max_answer_length: int = 30,
        null_score_diff_threshold: float = 0.0,
        keep_nbest: bool = False,
    ):
        example_index = features.example_index
        if np.any(np.diff(example_index) < 0):
            raise ValueError("features must keep each example's windows together, in example order")
        self._examples = examples
        self._example_index = example_index
        self._offsets = features.offsets  # (N, L, 2)
        # An example is complete once the feature where its windows end has been added.
        self._is_last = np.append(example_index[1:] != example_index[:-1], True)  # (N,)
        self._version_2 = version_2_with_negative
        self._n_best = n_best_size
        self._max_answer_length = max_answer_length
        self._threshold = null_score_diff_threshold
        self._keep_nbest = keep_nbest
        self._added = 0
        # The example whose windows are being added: its best spans so far and its
        # smallest null score.
        self._spans = np.empty((0, 5))
        self._null_score = math.inf
        self._answers: dict[str, str] = {}
        self._null_odds: dict[str, float] = {}
        self._nbest: dict[str, list[Candidate]] = {}

    def add(self, start_logits: np.ndarray, end_logits: np.ndarray) -> None:
        """Takes the logits (B, L) of the next B features."""
        # float32 also for bfloat16 logits, whose sums would round coarsely.
        start_logits = np.asarray(start_logits, np.float32)
        end_logits = np.asarray(end_logits, np.float32)
        first, stop = self._added, self._added + len(start_logits)
        offsets = self._offsets[first:stop]  # (B, L, 2)
        if start_logits.shape != end_logits.shape or start_logits.shape != offsets.shape[:2]:
            raise ValueError(
                f"logits {start_logits.shape} and {end_logits.shape} do not fit features {first}..{stop - 1} "
                f"of {len(self._offsets)}, whose (B, L) is {offsets.shape[:2]}"
            )
        spans, valid = _best_spans(start_logits, end_logits, offsets, self._n_best, self._max_answer_length)
        null_scores = start_logits[:, 0] + end_logits[:, 0]  # (B,)
        for row, feature in enumerate(range(first, stop)):
            merged = np.concatenate([self._spans, spans[row][valid[row]]])
            # Stable, so that among equal scores earlier windows stay first, as in run_qa.py.
            self._spans = merged[np.argsort(-merged[:, _SCORE], kind="stable")[: self._n_best]]
            self._null_score = min(self._null_score, float(null_scores[row]))
            if self._is_last[feature]:
                self._finalise(self._examples[self._example_index[feature]])
        self._added = stop

    def finish(self) -> Predictions:
        if self._added != len(self._offsets):
            raise ValueError(f"logits were added for {self._added} of {len(self._offsets)} features")
        return Predictions(self._answers, self._null_odds, self._nbest)

    def _finalise(self, example: Example) -> None:
        spans, null_score = self._spans, self._null_score
        self._spans, self._null_score = np.empty((0, 5)), math.inf
        if len(spans):
            best = spans[0]
            null_odds = null_score - best[_SCORE]
            answer = example.context[int(best[_START_CHAR]) : int(best[_END_CHAR])]
        else:
            null_odds, answer = math.inf, ""
        self._answers[example.id] = "" if self._version_2 and null_odds > self._threshold else answer
        self._null_odds[example.id] = float(null_odds)
        if self._keep_nbest:
            self._nbest[example.id] = [
                Candidate(example.context[int(s) : int(e)], float(score), float(start), float(end))
                for score, s, e, start, end in spans
            ]


def _best_spans(start_logits, end_logits, offsets, n_best, max_answer_length):
    """The n_best best spans of each feature, best first.

    start_logits, end_logits: (B, L); offsets: (B, L, 2), -1 off the context.
    Returns spans (B, n_best, 5) as span tables and valid (B, n_best), false
    where a feature has fewer than n_best valid spans.
    """
    rows = np.arange(len(start_logits))[:, None]  # (B, 1)
    # Stable sorts of the negated logits: among equal logits the earlier token first.
    starts = np.argsort(-start_logits, axis=1, kind="stable")[:, :n_best]  # (B, n)
    ends = np.argsort(-end_logits, axis=1, kind="stable")[:, :n_best]  # (B, n)
    n = starts.shape[1]
    s = np.repeat(starts, n, axis=1)  # (B, n*n): start-major, as run_qa.py's double loop
    e = np.tile(ends, (1, n))  # (B, n*n)
    is_context = offsets[..., 0] >= 0  # (B, L)
    valid = is_context[rows, s] & is_context[rows, e] & (e >= s) & (e - s + 1 <= max_answer_length)
    start_logit = start_logits[rows, s]
    end_logit = end_logits[rows, e]
    score = np.where(valid, start_logit + end_logit, -np.inf)
    best = np.argsort(-score, axis=1, kind="stable")[:, :n_best]  # (B, n_best)
    s = np.take_along_axis(s, best, axis=1)
    e = np.take_along_axis(e, best, axis=1)
    spans = np.stack(
        [
            np.take_along_axis(score, best, axis=1),
            offsets[rows, s, 0],
            offsets[rows, e, 1],
            np.take_along_axis(start_logit, best, axis=1),
            np.take_along_axis(end_logit, best, axis=1),
        ],
        axis=-1,
    ).astype(np.float64)
    return spans, np.take_along_axis(valid, best, axis=1)
