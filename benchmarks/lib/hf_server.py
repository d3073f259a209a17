"""A question-answering server around the `transformers` pipeline, as its users
write one today: the side that `cpu/serve.py` loads against `jaxqa serve`.

    python benchmarks/lib/hf_server.py HF_FOLDER [--port 8000] [--host 127.0.0.1]

FastAPI under uvicorn around `pipeline("question-answering", model=HF_FOLDER,
tokenizer=HF_FOLDER, device=-1)`, float32, in the JSON `jaxqa serve` takes:
POST / with `{"inputs": {"question", "context"}, "parameters": {...}}`
(`parameters` optional, passed to the pipeline: top_k, doc_stride,
max_answer_len, max_seq_len, max_question_len, handle_impossible_answer,
align_to_words) answers with the pipeline's dict (a list of them for top_k > 1).
The endpoint is a plain `def`, which FastAPI runs on its thread pool, and one
lock lets one request at a time into the pipeline, so that concurrent requests
wait their turn instead of splitting PyTorch's threads between them. GET /ready
says 200 once the pipeline is loaded, which is before the server listens.
"""

import argparse
import threading
import warnings

import numpy as np
import transformers
import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

PARAMETERS = (
    "top_k",
    "doc_stride",
    "max_answer_len",
    "max_seq_len",
    "max_question_len",
    "handle_impossible_answer",
    "align_to_words",
)
# transformers 5.2.0 calls np.array on torch tensors the way numpy 2 deprecates.
warnings.filterwarnings("ignore", message="__array__ implementation doesn't accept a copy keyword")


class Pair(BaseModel):
    question: str
    context: str


class Query(BaseModel):
    inputs: Pair
    parameters: dict | None = None


def plain(value):
    """The pipeline's answer with numpy's scalars as Python's, for the JSON encoder."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value.item() if isinstance(value, np.generic) else value


def create_app(folder: str) -> FastAPI:
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    qa = transformers.pipeline("question-answering", model=folder, tokenizer=folder, device=-1)
    lock = threading.Lock()
    app = FastAPI()

    @app.post("/")
    def answer(query: Query):
        parameters = {key: value for key, value in (query.parameters or {}).items() if value is not None}
        if unknown := set(parameters) - set(PARAMETERS):
            raise HTTPException(422, f"unknown parameters {sorted(unknown)}")
        with lock:
            return plain(qa(question=query.inputs.question, context=query.inputs.context, **parameters))

    @app.get("/ready")
    def ready() -> dict:
        return {"ready": True}

    return app


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", help="a Hugging Face question-answering folder")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    args = p.parse_args()
    uvicorn.run(create_app(args.folder), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
