"""Question answering on raw text: `jaxqa.pipeline(checkpoint)(question=..., context=...)`.

    qa = jaxqa.pipeline("checkpoint-folder")
    qa(question="Who wrote it?", context="It was written by Ada.")
    # {'score': 0.93, 'start': 18, 'end': 21, 'answer': 'Ada'}

Answers are decoded (`jaxqa.squad.decode.pipeline_answers`) as the Hugging Face
question-answering pipeline decodes them (transformers 5.2.0), so the same
weights in float32 (`precision="fp32"`) give the same answers:

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

The model runs through `jaxqa.engine` on windows padded to a few lengths
(`seq_buckets`) and batch sizes (powers of two up to `batch_size`), so a
process compiles at most len(seq_buckets) * len(batch sizes) programs whatever
the inputs.
"""

import dataclasses
import numbers
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import jax
import numpy as np

from jaxqa import models, runtimes
from jaxqa.engine import Engine
from jaxqa.errors import Error
from jaxqa.pretrained import Exported, Pretrained
from jaxqa.runtimes import Choice
from jaxqa.squad import buckets, decode
from jaxqa.squad.examples import Example
from jaxqa.squad.features import EvalFeatures, FeatureSettings, featurize_eval

# The pipeline pads to multiples of 32 tokens: one question at a time, finer steps
# than training's pay (benchmarks/results/buckets_cpu.json).
PIPELINE_LENGTH_STEP = 32


# Hugging Face's default window, which the pipeline takes where the model holds it.
DEFAULT_MAX_SEQ_LEN = 384

# The pipeline's arguments, by the window settings they set (`FeatureSettings`).
ARGUMENTS = {"max_seq_length": "max_seq_len", "doc_stride": "doc_stride", "max_query_length": "max_question_len"}


def default_max_seq_len(model: Pretrained | Exported) -> int:
    """Hugging Face's 384, or the longest window `model` takes where that is shorter."""
    return min(DEFAULT_MAX_SEQ_LEN, model.max_length)


def default_doc_stride(max_seq_len: int) -> int:
    """Hugging Face's: half a window, at most 128 tokens."""
    return min(max_seq_len // 2, 128)


NO_TOKENS = "the context has no tokens, so no answer"


class ArgumentError(Error, TypeError):
    """Arguments that ask no question (missing, or given both ways): a TypeError,
    as Python's own for a wrong call are, and a `jaxqa.Error` like every refusal."""


class InputError(Error):
    """A question or context that cannot be answered; `index` is its place among the inputs."""

    def __init__(self, index: int, reason: str):
        super().__init__(f"input {index}: {reason}")
        self.index = index
        self.reason = reason


def pipeline(
    checkpoint: str | Path | Pretrained | Exported,
    *,
    max_seq_len: int | None = None,
    doc_stride: int | None = None,
    max_question_len: int = 64,
    batch_size: int | None = None,
    seq_buckets: Sequence[int] | None = None,
    precision: str = "auto",
    runtime: str | None = None,
) -> "QuestionAnsweringPipeline":
    """A question-answering pipeline over a checkpoint folder (jaxqa or Hugging
    Face), an export folder (`jaxqa.export`: ONNX, run by ONNX Runtime, or
    LiteRT, run by the LiteRT interpreter) or a loaded model.

    `max_seq_len` defaults to 384, as in Hugging Face, or to the longest window
    the model takes where that is shorter (its position table's, or a LiteRT
    export's longest length). `doc_stride` defaults to min(max_seq_len // 2,
    128), as in Hugging Face.
    `batch_size` (windows per model call) defaults to 4 on CPU, where larger
    batches spill out of the caches and run no faster per window, and to 64 on
    accelerators, which need large batches to be busy.
    `seq_buckets` are the padded window lengths compiled; by default the
    multiples of 32 below max_seq_len, and max_seq_len. Finer steps pay for
    their extra programs (compiled once, or read from the persistent cache of
    `jaxqa.compilation_cache`): see benchmarks/results/buckets_cpu.json.
    `precision` of the matrix products: "fp32" (answers as Hugging Face's
    pipeline gives them), "bf16", "int8", or "auto", the fastest that this
    machine runs well, logged in one line (`jaxqa.precision`); a loaded model
    is run in it too. An export runs in its own precision, "auto" or that one.
    `runtime`: "xla", an export kept in `CHECKPOINT/exports/` ("onnx" or
    "litert", of `precision` unless that is "auto"), or "auto", the fastest of
    XLA's precisions and those exports that answers as XLA in float32 does,
    measured once per machine and model and cached (`jaxqa.runtimes`). By
    default "auto" where the checkpoint has exports beside it, else XLA; an
    export folder runs in its own runtime, a loaded model as it is. The
    pipeline's `info` says what runs and why.
    """
    settings = {
        "max_seq_len": max_seq_len,
        "doc_stride": doc_stride,
        "max_question_len": max_question_len,
        "batch_size": batch_size,
        "seq_buckets": None if seq_buckets is None else list(seq_buckets),
    }

    def build(model: Pretrained | Exported, choice: Choice | None = None) -> QuestionAnsweringPipeline:
        return _assemble(model, max_seq_len, doc_stride, max_question_len, batch_size, seq_buckets, choice)

    choice = runtimes.choose(checkpoint, runtime, precision, build, settings)
    return build(choice.model, choice)


def _assemble(
    model: Pretrained | Exported,
    max_seq_len: int | None,
    doc_stride: int | None,
    max_question_len: int,
    batch_size: int | None,
    seq_buckets: Sequence[int] | None,
    choice: Choice | None,
) -> "QuestionAnsweringPipeline":
    """The pipeline over `model` that `pipeline`'s arguments ask for, each checked."""
    if max_seq_len is None:
        max_seq_len = default_max_seq_len(model)
    models.check_length(model.config, max_seq_len, "max_seq_len")
    if max_seq_len > model.max_length:
        raise Error(f"max_seq_len {max_seq_len}: {model.folder} takes windows of at most {model.max_length} tokens")
    if doc_stride is None:
        doc_stride = default_doc_stride(max_seq_len)
    if batch_size is None:
        batch_size = 4 if jax.default_backend() == "cpu" else 64
    settings = FeatureSettings(max_seq_len, doc_stride, max_question_len).check(ARGUMENTS.__getitem__)
    if seq_buckets is None:
        seq_buckets = buckets.widths(max_seq_len, PIPELINE_LENGTH_STEP)
    if max(seq_buckets) != max_seq_len or min(seq_buckets) < 1:
        raise Error(f"seq_buckets {list(seq_buckets)} must be positive and end at max_seq_len={max_seq_len}")
    if batch_size < 1:
        raise Error(f"batch_size={batch_size} must be at least 1")
    sizes = (*(1 << i for i in range(batch_size.bit_length()) if 1 << i < batch_size), batch_size)
    return QuestionAnsweringPipeline(model, settings, Engine(model.runtime, seq_buckets, sizes), choice)


@dataclasses.dataclass(frozen=True)
class Decoding:
    """How windows' logits become answers (see the module's docstring)."""

    top_k: int = 1
    handle_impossible_answer: bool = False
    max_answer_len: int = 15
    align_to_words: bool = True

    def __post_init__(self):
        for name in ("top_k", "max_answer_len"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise Error(f"{name}={value!r} must be a whole number, at least 1")
        for name in ("handle_impossible_answer", "align_to_words"):
            if not isinstance(getattr(self, name), bool):
                raise Error(f"{name}={getattr(self, name)!r} must be true or false")


@dataclasses.dataclass(frozen=True)
class Asked:
    """What one call asks: its (question, context) pairs, whether one alone was
    asked (one result, not a list), the windows to cut and how to decode."""

    pairs: tuple[tuple[str, str], ...]
    single: bool
    windows: FeatureSettings
    decoding: Decoding


class QuestionAnsweringPipeline:
    """Answers questions about contexts; make one with `jaxqa.pipeline`.

    A call is three steps, which a server runs apart: `ask` (the arguments,
    checked), `featurize` (the windows) and `answer` (the answers from the
    windows' logits); `engine` gives the logits in between
    (`jaxqa.engine.Engine`; tests pass a stand-in that chooses them).
    """

    def __init__(
        self, model: Pretrained | Exported, settings: FeatureSettings, engine: Engine, choice: Choice | None = None
    ):
        self.model = model
        self.settings = settings
        self.engine = engine
        self.choice = choice  # why this model runs, as `jaxqa.runtimes` chose it
        self._continues_word = decode.continuation_table(model.tokenizer)

    @property
    def info(self) -> dict:
        """What runs and why: "runtime" ("xla", "onnx" or "litert"), "precision",
        "folder", "why" (one line); with `runtime="auto"` also "measured" (each
        candidate's median seconds per probe and whether it agrees) and "cached"."""
        info: dict[str, object] = {
            "runtime": self.model.runtime.name,
            "precision": self.model.precision,
            "folder": str(self.model.folder),
            "why": "asked" if self.choice is None else self.choice.why,
        }
        if self.choice is not None and self.choice.measured is not None:
            info.update(measured=self.choice.measured, cached=self.choice.cached)
        return info

    @property
    def precision(self) -> str:
        """The precision its matrix products run in: "fp32", "bf16" or "int8"."""
        return self.model.precision

    @property
    def traces(self) -> int:
        """How many programs the model was compiled to so far (one per padded shape)."""
        return self.engine.traces

    def warm_up(self, seq_buckets: Iterable[int] | None = None, batch_buckets: Iterable[int] | None = None) -> None:
        """Compiles ahead of time; afterwards inputs of those shapes never compile again."""
        self.engine.warm_up(seq_buckets, batch_buckets)

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
        max_seq_len: int | None = None,
        doc_stride: int | None = None,
        max_question_len: int | None = None,
    ):
        """Answers a `{"question", "context"}` dict, a list of them, or `question=`/`context=`.

        A string question with a list of contexts (or the reverse) asks it of each.
        Each answer is {"score", "start", "end", "answer"}, with `answer ==
        context[start:end]`. A question gets one answer dict, or a list of up to
        `top_k` of them when top_k > 1; a list of questions gets a list of those.
        `max_seq_len` (at most the pipeline's own), `doc_stride` and
        `max_question_len` cut this call's windows otherwise than the pipeline's.
        """
        decoding = Decoding(top_k, handle_impossible_answer, max_answer_len, align_to_words)
        asked = self.ask(inputs, question, context, decoding, self.windows(max_seq_len, doc_stride, max_question_len))
        if not asked.pairs:
            return []
        features = self.featurize(asked)
        return self.answer(
            asked, features, *self.engine(features.input_ids, features.attention_mask, features.token_type_ids)
        )

    def windows(
        self, max_seq_len: int | None = None, doc_stride: int | None = None, max_question_len: int | None = None
    ) -> FeatureSettings:
        """The pipeline's window settings, with those a call gives in their place, checked."""
        own = self.settings
        if max_seq_len is not None and not isinstance(max_seq_len, bool) and max_seq_len > own.max_seq_length:
            raise Error(f"max_seq_len {max_seq_len}: this pipeline's windows hold at most {own.max_seq_length} tokens")
        asked = {"max_seq_length": max_seq_len, "doc_stride": doc_stride, "max_query_length": max_question_len}
        for field, value in asked.items():
            if value is not None and (not isinstance(value, numbers.Integral) or isinstance(value, bool)):
                raise Error(f"{ARGUMENTS[field]}={value!r} must be a whole number")
        given = {field: int(value) for field, value in asked.items() if value is not None}
        return dataclasses.replace(own, **given).check(ARGUMENTS.__getitem__)

    def ask(self, inputs, question, context, decoding: Decoding, windows: FeatureSettings) -> Asked:
        """What a call asks, its inputs checked as `__call__` takes them."""
        pairs, single = _pairs(inputs, question, context)
        return Asked(tuple(pairs), single, windows, decoding)

    def untokenized(self, contexts: Sequence[str]) -> list[int]:
        """The places among `contexts` of those with no tokens (only spaces or
        zero-width characters), which `featurize` refuses: a caller checks a
        whole set of inputs with it before answering any."""
        encodings = self.model.tokenizer.encode_batch(list(contexts), add_special_tokens=False)
        return [i for i, encoding in enumerate(encodings) if not encoding.ids]

    def featurize(self, asked: Asked) -> EvalFeatures:
        """The windows of what is asked; a context of no tokens is refused, naming its input."""
        examples = [Example(str(i), "", q, c, (), (), False) for i, (q, c) in enumerate(asked.pairs)]
        features = featurize_eval(examples, self.model.tokenizer, asked.windows, ARGUMENTS.__getitem__)
        is_context = features.offsets[..., 0] >= 0  # (N, L)
        context_tokens = np.bincount(features.example_index, is_context.sum(axis=1), minlength=len(examples))  # (E,)
        if not context_tokens.all():
            raise InputError(int(np.argmin(context_tokens)), NO_TOKENS)
        return features

    def answer(self, asked: Asked, features: EvalFeatures, start_logits: np.ndarray, end_logits: np.ndarray):
        """The answers, from the windows' logits (N, L) each, as `__call__` returns them."""
        d = asked.decoding
        answers = decode.pipeline_answers(
            [context for _, context in asked.pairs],
            features,
            start_logits,
            end_logits,
            self._continues_word,
            top_k=d.top_k,
            handle_impossible_answer=d.handle_impossible_answer,
            max_answer_len=d.max_answer_len,
            align_to_words=d.align_to_words,
        )
        results = [answer[0] if d.top_k == 1 else answer for answer in answers]
        return results[0] if asked.single else results


def _pairs(inputs, question, context) -> tuple[list[tuple[str, str]], bool]:
    """The (question, context) pairs asked, and whether a single one was (so one result is returned)."""
    if inputs is not None:
        if question is not None or context is not None:
            raise ArgumentError(
                "pass a {'question', 'context'} dict (or a list of them), or question= and context=, not both"
            )
        single = isinstance(inputs, dict)
        if not single and not _is_list(inputs):
            raise InputError(
                0, f"expected a dict with 'question' and 'context', or a list of them, got {type(inputs).__name__}"
            )
        items = [inputs] if single else list(inputs)
        for i, item in enumerate(items):
            if not isinstance(item, dict) or "question" not in item or "context" not in item:
                raise InputError(i, f"expected a dict with 'question' and 'context', got {str(item)[:80]!r}")
        pairs = [(item["question"], item["context"]) for item in items]
    elif question is None or context is None:
        raise ArgumentError("pass both question= and context= (or a {'question', 'context'} dict)")
    else:
        for name, value in (("question", question), ("context", context)):
            if not isinstance(value, str) and not _is_list(value):
                raise InputError(
                    0, f"{name}= must be a string or a list of strings, got {type(value).__name__} {value!r:.40}"
                )
        single = isinstance(question, str) and isinstance(context, str)
        questions = [question] if isinstance(question, str) else list(question)
        contexts = [context] if isinstance(context, str) else list(context)
        # A string given with a list goes with each of its items.
        if isinstance(question, str):
            questions *= len(contexts)
        if isinstance(context, str):
            contexts *= len(questions)
        if len(questions) != len(contexts):
            raise Error(f"{len(questions)} questions but {len(contexts)} contexts")
        pairs = list(zip(questions, contexts))
    for i, (q, c) in enumerate(pairs):
        for name, text in (("question", q), ("context", c)):
            if not isinstance(text, str) or not text:
                raise InputError(i, f"the {name} must be a non-empty string, got {text!r:.40}")
    return pairs, single


def _is_list(value) -> bool:
    """Whether `value` is taken as a list of inputs: any iterable but text, bytes and mappings."""
    return isinstance(value, Iterable) and not isinstance(value, (str, bytes, Mapping))
