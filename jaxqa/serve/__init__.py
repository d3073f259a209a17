"""`jaxqa serve MODEL` (`python -m jaxqa.serve`): a question-answering service
over HTTP, in the Hugging Face inference JSON, with dynamic batching.

A few named parts, data flowing one way:

- `requests`: the JSON of a question, checked, as the pipeline's `Asked`;
- `batcher`: the bounded queue, the batches cut from it by token budget, and
  the one worker thread that runs the model (`jaxqa.engine`);
- `metrics`: what Prometheus reads at each hand-off;
- `app`: the ASGI app (`create_app`), which any ASGI host can mount;
- `command`: the command line, uvicorn and a drain on SIGTERM.

Needs the optional extra `pip install "jaxqa[serve]"`.
"""
