"""Question answering on raw text: `jaxqa.pipeline(checkpoint)(question=..., context=...)`.

    qa = jaxqa.pipeline("checkpoint-folder")
    qa(question="Who wrote it?", context="It was written by Ada.")
    # {'score': 0.93, 'start': 18, 'end': 21, 'answer': 'Ada'}

Answers are decoded as the Hugging Face question-answering pipeline decodes them
(transformers 5.2.0), so the same weights give the same answers:

- Each window's start and end logits get a softmax over its context tokens and
  [CLS]; question, separator and padding tokens are left out.
- A span (s, e) of context tokens with s <= e < s + max_answer_len scores
  p_start[s] * p_end[e]. Each window offers its `2 * top_k + 10` best spans
  (`top_k` without word alignment), best first.
- With `align_to_words`, a span grows to whole words: from the first token of
  the start token's word to the last token of the end token's word, as far as the
  window holds them.
- Spans whose texts are equal up to case are merged, windows in order: the first
  keeps its offsets and the scores add up.
- With `handle_impossible_answer`, the empty answer (start = end = 0) competes
  with the score p_start[CLS] * p_end[CLS] of the window where it is smallest.
- The `top_k` best answers are returned, highest score first.

Deliberate differences: a question keeps its first `max_question_len` tokens
(the Hugging Face pipeline ignores that setting with a fast tokenizer); spans
are only ever made of context tokens (Hugging Face fills a window with fewer
valid spans than it asks for with zero-score ones); `top_k > 1` always gives a
list and a one-element list of inputs a one-element list, where Hugging Face
gives a bare dict.

The model runs on windows padded to a few lengths (`seq_buckets`) and batch
sizes (powers of two up to `batch_size`), so a process compiles at most
len(seq_buckets) * len(batch sizes) programs whatever the inputs.
"""

from collections.abc import Iterable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import tokenizers

from jaxqa.features import FeatureSettings, featurize_eval
from jaxqa.pretrained import Pretrained, load_pretrained
from jaxqa.squad import Example

# What the Hugging Face pipeline puts in place of the logits it leaves out.
_MASKED_LOGIT = -10000.0


class InputError(ValueError):
    """A question or context that cannot be answered; `index` is its place among the inputs."""

    def __init__(self, index: int, reason: str):
        super().__init__(f"input {index}: {reason}")
        self.index = index
        self.reason = reason


def pipeline(
    checkpoint: str | Path | Pretrained,
    *,
    max_seq_len: int = 384,
    doc_stride: int | None = None,
    max_question_len: int = 64,
    batch_size: int | None = None,
    seq_buckets: Sequence[int] | None = None,
    dtype=jnp.float32,
) -> "QuestionAnsweringPipeline":
    """A question-answering pipeline over a checkpoint folder (jaxqa or Hugging Face) or a loaded model.

    `doc_stride` defaults to min(max_seq_len // 2, 128), as in Hugging Face.
    `batch_size` (windows per model call) defaults to 4 on CPU, where larger
    batches spill out of the caches and run no faster per window, and to 64 on
    accelerators, which need large batches to be busy.
    `seq_buckets` are the padded window lengths compiled; by default the
    multiples of 32 below max_seq_len, and max_seq_len. Finer steps pay for
    their extra programs (compiled once, or read from the persistent cache of
    `jaxqa.compilation_cache`): see benchmarks/cpu_buckets.py.
    """
    model = checkpoint if isinstance(checkpoint, Pretrained) else load_pretrained(checkpoint, dtype=dtype)
    if doc_stride is None:
        doc_stride = min(max_seq_len // 2, 128)
    if batch_size is None:
        batch_size = 4 if jax.default_backend() == "cpu" else 64
    if not 0 <= doc_stride < max_seq_len:
        raise ValueError(f"doc_stride={doc_stride} must be at least 0 and below max_seq_len={max_seq_len}")
    if seq_buckets is None:
        seq_buckets = [*range(32, max_seq_len, 32), max_seq_len]
    if max(seq_buckets) != max_seq_len or min(seq_buckets) < 1:
        raise ValueError(f"seq_buckets {list(seq_buckets)} must be positive and end at max_seq_len={max_seq_len}")
    settings = FeatureSettings(max_seq_length=max_seq_len, doc_stride=doc_stride, max_query_length=max_question_len)
    return QuestionAnsweringPipeline(model, settings, BucketedModel(model, seq_buckets, batch_size))


class BucketedModel:
    """The model jitted for a fixed set of padded shapes.

    `model_logits(input_ids, attention_mask, token_type_ids)` takes windows (N, L)
    and gives start and end logits (N, L) as numpy; positions past the bucket a
    window was padded to get logit 0. `traces` counts the programs compiled.
    """

    def __init__(self, model: Pretrained, seq_buckets: Sequence[int], batch_size: int):
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be at least 1")
        self.model = model
        self.seq_buckets = tuple(sorted(set(seq_buckets)))
        self.batch_buckets = (*(1 << i for i in range(batch_size.bit_length()) if 1 << i < batch_size), batch_size)
        self.traces = 0
        self._logits = jax.jit(self._traced_logits)

    def _traced_logits(self, params, input_ids, attention_mask, token_type_ids):
        # Python runs this body only when jax traces a new input shape, so the
        # counter tells how many programs were compiled.
        self.traces += 1
        return self.model.module.apply({"params": params}, input_ids, attention_mask, token_type_ids)

    def warm_up(self, seq_buckets: Iterable[int] | None = None, batch_buckets: Iterable[int] | None = None) -> None:
        """Compiles the programs for these buckets (all of them by default) ahead of the first questions."""
        lengths = self.seq_buckets if seq_buckets is None else tuple(seq_buckets)
        batches = self.batch_buckets if batch_buckets is None else tuple(batch_buckets)
        if not set(lengths) <= set(self.seq_buckets) or not set(batches) <= set(self.batch_buckets):
            raise ValueError(f"the buckets are lengths {self.seq_buckets} and batch sizes {self.batch_buckets}")
        for length in lengths:
            for batch in batches:
                zeros = np.zeros((batch, length), np.int32)
                jax.block_until_ready(self._logits(self.model.params, zeros, zeros, zeros))

    def __call__(self, input_ids, attention_mask, token_type_ids) -> tuple[np.ndarray, np.ndarray]:
        n, length = input_ids.shape
        if length > self.seq_buckets[-1]:
            raise ValueError(f"windows of {length} tokens do not fit the largest bucket, {self.seq_buckets[-1]}")
        # Each window goes to the shortest bucket that holds it, and batches
        # never mix buckets, so little of them is padding.
        widths = np.asarray(self.seq_buckets)[np.searchsorted(self.seq_buckets, attention_mask.sum(axis=1))]  # (N,)
        batch_size = self.batch_buckets[-1]
        batches = []  # (width, rows)
        for width in np.unique(widths).tolist():
            same = np.flatnonzero(widths == width)
            batches += [(width, same[i : i + batch_size]) for i in range(0, len(same), batch_size)]
        outputs = []
        for width, rows in batches:
            padded = []
            for array in (input_ids, attention_mask, token_type_ids):
                # Padding rows are all-masked; their logits are dropped.
                block = np.zeros((_bucket(self.batch_buckets, len(rows)), width), np.int32)
                block[: len(rows)] = array[rows, :width]
                padded.append(block)
            # Not waited for: the next batch is padded while this one runs.
            outputs.append(self._logits(self.model.params, *padded))
        start_logits = np.zeros((n, length), np.float32)
        end_logits = np.zeros((n, length), np.float32)
        for (width, rows), (start, end) in zip(batches, outputs):
            start_logits[rows, :width] = np.asarray(start)[: len(rows)]
            end_logits[rows, :width] = np.asarray(end)[: len(rows)]
        return start_logits, end_logits


def _bucket(buckets: Sequence[int], size: int) -> int:
    """The smallest bucket that holds `size`."""
    return buckets[int(np.searchsorted(buckets, size))]


class QuestionAnsweringPipeline:
    """Answers questions about contexts; make one with `jaxqa.pipeline`.

    `model_logits` is called like `BucketedModel` and gives the windows' logits;
    tests pass a stand-in that chooses them.
    """

    def __init__(self, model: Pretrained, settings: FeatureSettings, model_logits: BucketedModel):
        self.model = model
        self.settings = settings
        self.model_logits = model_logits
        self._continues_word = _continuation_table(model.tokenizer)

    @property
    def traces(self) -> int:
        """How many programs the model was compiled to so far (one per padded shape)."""
        return self.model_logits.traces

    def warm_up(self, seq_buckets: Iterable[int] | None = None, batch_buckets: Iterable[int] | None = None) -> None:
        """Compiles ahead of time; afterwards inputs of those shapes never compile again."""
        self.model_logits.warm_up(seq_buckets, batch_buckets)

    def __call__(
        self,
        inputs: dict | Iterable[dict] | None = None,
        *,
        question: str | Sequence[str] | None = None,
        context: str | Sequence[str] | None = None,
        top_k: int = 1,
        handle_impossible_answer: bool = False,
        max_answer_len: int = 15,
        align_to_words: bool = True,
    ):
        """Answers a `{"question", "context"}` dict, a list of them, or `question=`/`context=`.

        A string question with a list of contexts (or the reverse) asks it of each.
        Each answer is {"score", "start", "end", "answer"}, with `answer ==
        context[start:end]`. A question gets one answer dict, or a list of up to
        `top_k` of them when top_k > 1; a list of questions gets a list of those.
        """
        if top_k < 1:
            raise ValueError(f"top_k={top_k} must be at least 1")
        if max_answer_len < 1:
            raise ValueError(f"max_answer_len={max_answer_len} must be at least 1")
        pairs, single = _pairs(inputs, question, context)
        if not pairs:
            return []
        examples = [Example(str(i), "", q, c, (), (), False) for i, (q, c) in enumerate(pairs)]
        features = featurize_eval(examples, self.model.tokenizer, self.settings)
        is_context = features.offsets[..., 0] >= 0  # (N, L)
        context_tokens = np.bincount(features.example_index, is_context.sum(axis=1), minlength=len(examples))  # (E,)
        if not context_tokens.all():
            raise InputError(int(np.argmin(context_tokens)), "the context has no tokens, so no answer")
        start_logits, end_logits = self.model_logits(features.input_ids, features.attention_mask, features.token_type_ids)

        p_start, p_end = span_probabilities(start_logits, end_logits, is_context)
        candidates = 2 * top_k + 10 if align_to_words else top_k  # alignment may merge some, as in Hugging Face
        start, end, score, valid = best_spans(p_start, p_end, is_context, max_answer_len, candidates)  # (N, K)
        if align_to_words:
            word_first, word_last = word_bounds(features.input_ids, is_context, self._continues_word)
            rows = np.arange(len(start))[:, None]
            start, end = word_first[rows, start], word_last[rows, end]
        start_char = np.take_along_axis(features.offsets[..., 0], start, axis=1)  # (N, K)
        end_char = np.take_along_axis(features.offsets[..., 1], end, axis=1)
        null_score = p_start[:, 0] * p_end[:, 0]  # (N,)

        # Each example's windows are adjacent in the features.
        bounds = np.searchsorted(features.example_index, np.arange(len(examples) + 1))
        results = []
        for example, first, stop in zip(examples, bounds[:-1], bounds[1:]):
            windows = slice(first, stop)
            answers = _merge_answers(
                example.context,
                start_char[windows][valid[windows]],
                end_char[windows][valid[windows]],
                score[windows][valid[windows]],
                float(null_score[windows].min()) if handle_impossible_answer else None,
            )[:top_k]
            results.append(answers[0] if top_k == 1 else answers)
        return results[0] if single else results


def _pairs(inputs, question, context) -> tuple[list[tuple[str, str]], bool]:
    """The (question, context) pairs asked, and whether a single one was (so one result is returned)."""
    if inputs is not None:
        if question is not None or context is not None:
            raise TypeError("pass a {'question', 'context'} dict (or a list of them), or question= and context=, not both")
        single = isinstance(inputs, dict)
        items = [inputs] if single else list(inputs)
        for i, item in enumerate(items):
            if not isinstance(item, dict) or "question" not in item or "context" not in item:
                raise InputError(i, f"expected a dict with 'question' and 'context', got {str(item)[:80]!r}")
        pairs = [(item["question"], item["context"]) for item in items]
    elif question is None or context is None:
        raise TypeError("pass both question= and context= (or a {'question', 'context'} dict)")
    else:
        single = isinstance(question, str) and isinstance(context, str)
        questions = [question] if isinstance(question, str) else list(question)
        contexts = [context] if isinstance(context, str) else list(context)
        # A string given with a list goes with each of its items.
        if isinstance(question, str):
            questions *= len(contexts)
        if isinstance(context, str):
            contexts *= len(questions)
        if len(questions) != len(contexts):
            raise ValueError(f"{len(questions)} questions but {len(contexts)} contexts")
        pairs = list(zip(questions, contexts))
    for i, (q, c) in enumerate(pairs):
        for name, text in (("question", q), ("context", c)):
            if not isinstance(text, str) or not text:
                raise InputError(i, f"the {name} must be a non-empty string, got {text!r}")
    return pairs, single


def _continuation_table(tokenizer) -> np.ndarray:
    """(V,) bool: which token ids continue a word (WordPiece's '##' pieces)."""
    if not isinstance(tokenizer.model, tokenizers.models.WordPiece):
        raise ValueError(f"word alignment needs a WordPiece tokenizer, not {type(tokenizer.model).__name__}")
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


def best_spans(p_start, p_end, is_context, max_answer_len: int, k: int):
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
    top = np.sort(np.argpartition(-scores, k - 1, axis=1)[:, :k], axis=1)  # (N, K), in span order
    # Stable: equal scores stay in span order, i.e. by start then end token.
    top = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable"), axis=1)
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
