"""A question-answering request in the Hugging Face inference JSON, as
`huggingface_hub.InferenceClient.question_answering` sends it:

    {"inputs": {"question": "...", "context": "..."},
     "parameters": {"top_k": 1, "doc_stride": 128, "max_answer_len": 15, "max_seq_len": 384,
                    "max_question_len": 64, "handle_impossible_answer": false, "align_to_words": true}}

`inputs` may also be a list of such objects, and `question` a list of
questions on one context (which is tokenized once). Every parameter is
optional (null means not given). The models below are the schema that the
app checks and publishes (OpenAPI); `asked` turns a request into what the
pipeline asks (`jaxqa.pipeline.Asked`), with the pipeline's own checks.
"""

from pydantic import BaseModel, ConfigDict, StrictBool, StrictInt, StrictStr

from jaxqa.pipeline import Asked, Decoding, QuestionAnsweringPipeline


class Question(BaseModel):
    """A question, or several, about one context."""

    model_config = ConfigDict(extra="forbid")
    question: StrictStr | list[StrictStr]
    context: StrictStr


class Parameters(BaseModel):
    """The pipeline's parameters (`jaxqa.pipeline`): how the context is cut into
    windows and how answers are chosen."""

    model_config = ConfigDict(extra="forbid")
    top_k: StrictInt | None = None
    doc_stride: StrictInt | None = None
    max_answer_len: StrictInt | None = None
    max_seq_len: StrictInt | None = None
    max_question_len: StrictInt | None = None
    handle_impossible_answer: StrictBool | None = None
    align_to_words: StrictBool | None = None


class Query(BaseModel):
    """One request: a question (or several on one context), or a list of them."""

    model_config = ConfigDict(extra="forbid")
    inputs: Question | list[Question]
    parameters: Parameters = Parameters()


class Answer(BaseModel):
    """One answer: `context[start:end] == answer`; a list of them when top_k > 1."""

    answer: str
    score: float
    start: int
    end: int


def asked(qa: QuestionAnsweringPipeline, query: Query) -> Asked:
    """What `query` asks of `qa`, checked as a call of the pipeline is (a
    `jaxqa.Error` naming the parameter or input at fault)."""
    p = query.parameters
    given = {name: value for name, value in p.model_dump().items() if value is not None}
    decoding = Decoding(**{name: given[name] for name in Decoding.__dataclass_fields__ if name in given})
    windows = qa.windows(p.max_seq_len, p.doc_stride, p.max_question_len)
    if isinstance(query.inputs, Question):
        return qa.ask(None, query.inputs.question, query.inputs.context, decoding, windows)
    return qa.ask([item.model_dump() for item in query.inputs], None, None, decoding, windows)
