"""Start/end logits -> answers, in the two ways the reference systems decode them.

1. `AnswerCollector`: as Hugging Face `run_qa.py` and BERT's `run_squad.py` do
   it, for evaluation on SQuAD.
2. `pipeline_answers`: as the Hugging Face question-answering pipeline does it
   (see `jaxqa.pipeline` for the rules it follows).

## run_qa.py

Per example, over all its windows: the `n_best_size` best start and end tokens of
each window are paired; a pair counts when both tokens are context tokens, the end
is not before the start and the span has at most `max_answer_length` tokens. Its
score is start_logit + end_logit and its text is the context between the start
token's first and the end token's last character. Padding tokens are not among
the best (run_qa.py ranks them too), so that an answer does not depend on the
length a window was padded to.

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
import tokenizers

from jaxqa.errors import Error
from jaxqa.squad.examples import Example
from jaxqa.squad.features import EvalFeatures

# What the Hugging Face pipeline puts in place of the logits it leaves out.
_MASKED_LOGIT = -10000.0


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
        self._real = features.attention_mask.astype(bool)  # (N, L)
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
        # Padding never enters the best n: what a window is padded to must not change its answer.
        real = self._real[first:stop]
        start_logits = np.where(real, start_logits, -np.inf)
        end_logits = np.where(real, end_logits, -np.inf)
        spans, valid = _n_best_logit_spans(start_logits, end_logits, offsets, self._n_best, self._max_answer_length)
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


def _n_best_logit_spans(start_logits, end_logits, offsets, n_best, max_answer_length):
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


# --- the question-answering pipeline ---------------------------------------------


def pipeline_answers(
    contexts: Sequence[str],
    features: EvalFeatures,
    start_logits,
    end_logits,
    continues_word,
    *,
    top_k: int,
    handle_impossible_answer: bool,
    max_answer_len: int,
    align_to_words: bool,
) -> list[list[dict]]:
    """Each context's answers {"score", "start", "end", "answer"}, best first, at most `top_k`.

    features: the windows of the questions about `contexts` (`featurize_eval`);
    start_logits, end_logits: (N, L) their logits; continues_word: (V,) bool,
    from `continuation_table`.
    """
    is_context = features.offsets[..., 0] >= 0  # (N, L)
    p_start, p_end = span_probabilities(start_logits, end_logits, is_context)
    candidates = 2 * top_k + 10 if align_to_words else top_k  # alignment may merge some, as in Hugging Face
    start, end, score, valid = best_probability_spans(p_start, p_end, is_context, max_answer_len, candidates)  # (N, K)
    if align_to_words:
        word_first, word_last = word_bounds(features.input_ids, is_context, continues_word)
        rows = np.arange(len(start))[:, None]
        start, end = word_first[rows, start], word_last[rows, end]
    start_char = np.take_along_axis(features.offsets[..., 0], start, axis=1)  # (N, K)
    end_char = np.take_along_axis(features.offsets[..., 1], end, axis=1)
    null_score = p_start[:, 0] * p_end[:, 0]  # (N,)

    # Each example's windows are adjacent in the features.
    bounds = np.searchsorted(features.example_index, np.arange(len(contexts) + 1))
    results = []
    for context, first, stop in zip(contexts, bounds[:-1], bounds[1:]):
        windows = slice(first, stop)
        results.append(
            _merge_answers(
                context,
                start_char[windows][valid[windows]],
                end_char[windows][valid[windows]],
                score[windows][valid[windows]],
                float(null_score[windows].min()) if handle_impossible_answer else None,
            )[:top_k]
        )
    return results


def continuation_table(tokenizer) -> np.ndarray:
    """(V,) bool: which token ids continue a word (WordPiece's '##' pieces)."""
    if not isinstance(tokenizer.model, tokenizers.models.WordPiece):
        raise Error(f"word alignment needs a WordPiece tokenizer, not {type(tokenizer.model).__name__}")
    prefix = tokenizer.model.continuing_subword_prefix
    vocab = tokenizer.get_vocab()
    table = np.zeros(max(vocab.values()) + 1, bool)
    table[[i for token, i in vocab.items() if token.startswith(prefix)]] = True
    return table


def span_probabilities(start_logits, end_logits, is_context) -> tuple[np.ndarray, np.ndarray]:
    """Softmax of each window's logits over its context tokens and [CLS] (position 0).

    start_logits, end_logits: (N, L); is_context: (N, L) bool. Returns float32
    (N, L) each, zero off the context but for [CLS]: it takes part in the
    normalisation and gives the null score, though no span starts or ends there.
    """
    keep = is_context.copy()
    keep[:, 0] = True
    probabilities = []
    for logits in (start_logits, end_logits):
        masked = np.where(keep, np.asarray(logits, np.float32), np.float32(_MASKED_LOGIT))
        exp = np.exp(masked - masked.max(axis=1, keepdims=True))
        probabilities.append(exp / exp.sum(axis=1, keepdims=True))
    return probabilities[0], probabilities[1]


def best_probability_spans(p_start, p_end, is_context, max_answer_len: int, k: int):
    """The k most probable spans of each window, best first.

    p_start, p_end: (N, L) float32; is_context: (N, L) bool. A span is valid when
    both its tokens are context tokens and s <= e < s + max_answer_len. Returns
    start, end token positions, score p_start[s] * p_end[e] and valid, each
    (N, K) with K = min(k, L * max_answer_len); valid is false where a window
    has fewer than K spans.
    """
    n, length = p_start.shape
    width = min(max_answer_len, length)
    # (N, L, A): the span that starts at token s and ends at token s + a.
    end_at = np.arange(length)[:, None] + np.arange(width)[None, :]  # (L, A)
    inside = end_at < length
    end_at = np.minimum(end_at, length - 1)
    valid = is_context[:, :, None] & is_context[:, end_at] & inside  # (N, L, A)
    # Invalid spans score -1, below any probability, so they sort last.
    scores = np.where(valid, p_start[:, :, None] * p_end[:, end_at], np.float32(-1)).reshape(n, -1)  # (N, L*A)
    k = min(k, scores.shape[1])
    # A stable sort of every span: equal scores stay in span order (by start, then
    # end token) on every CPU, where a partial sort would keep an arbitrary few of them.
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]  # (N, K)
    start, offset = np.divmod(top, width)
    score = np.take_along_axis(scores, top, axis=1)
    return start, end_at[start, offset], score, score >= 0


def word_bounds(input_ids, is_context, continues_word) -> tuple[np.ndarray, np.ndarray]:
    """For each token, the first and the last token of its word in the window.

    input_ids: (N, L); is_context: (N, L) bool; continues_word: (V,) bool. A word
    cut by a window's edge ends at that edge, as `Encoding.word_to_chars` of the
    window's encoding has it. Returns two (N, L) int arrays (meaningful at
    context tokens).
    """
    n, length = input_ids.shape
    position = np.broadcast_to(np.arange(length), (n, length))
    context_before = np.pad(is_context[:, :-1], ((0, 0), (1, 0)))
    opens = is_context & (~continues_word[input_ids] | ~context_before)  # (N, L): first token of a word
    opens_next = np.pad(opens[:, 1:], ((0, 0), (0, 1)))
    context_next = np.pad(is_context[:, 1:], ((0, 0), (0, 1)))
    closes = is_context & (opens_next | ~context_next)  # (N, L): last token of a word
    first = np.maximum.accumulate(np.where(opens, position, 0), axis=1)
    last = np.minimum.accumulate(np.where(closes, position, length - 1)[:, ::-1], axis=1)[:, ::-1]
    return first, last


def _merge_answers(context: str, start_char, end_char, score, null_score: float | None) -> list[dict]:
    """One example's answers, best first.

    start_char, end_char, score: (S,), the spans of its windows in window order,
    each window's best first. Spans of the same text up to case make one answer
    with the first one's offsets and the sum of their scores. `null_score`
    adds the empty answer.
    """
    answers: dict[str, dict] = {}
    for first, stop, p in zip(start_char.tolist(), end_char.tolist(), score.tolist()):
        text = context[first:stop]
        same = answers.get(text.lower())
        if same is None:
            answers[text.lower()] = {"score": p, "start": first, "end": stop, "answer": text}
        else:
            same["score"] += p
    ranked = list(answers.values())
    if null_score is not None:
        ranked.append({"score": null_score, "start": 0, "end": 0, "answer": ""})
    # Stable: of equal scores, the answer found first stays first.
    return sorted(ranked, key=lambda answer: answer["score"], reverse=True)
