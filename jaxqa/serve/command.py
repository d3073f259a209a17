"""`jaxqa serve MODEL` (`python -m jaxqa.serve MODEL`): the app (`jaxqa.serve.app`)
under uvicorn, on 127.0.0.1:8000 by default.

MODEL is what `jaxqa.pipeline` takes: a jaxqa checkpoint, a Hugging Face folder
or hub id, or an ONNX or LiteRT export folder; `--runtime` chooses what runs a
checkpoint (`jaxqa.runtimes`: by default `auto` where it has exports beside it). On SIGTERM or SIGINT the server
drains: `/ready` turns false, new requests get 503, every request already
accepted is answered, and the process exits 0 within `--drain-seconds`.
"""

import argparse
import logging
import signal
import sys

from jaxqa import compilation_cache, precision, runtimes
from jaxqa.errors import Error, log_to
from jaxqa.serve.app import Limits

log = logging.getLogger("jaxqa.serve")


def parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Serves a question-answering model over HTTP.")
    p.add_argument("model", help="jaxqa checkpoint, Hugging Face folder or hub id, or an ONNX or LiteRT export folder")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8000, help="port to listen on")
    p.add_argument(
        "--max-seq-len",
        "--max-seq-length",
        type=int,
        help="tokens per window, at most (default: 384, or the model's longest window if shorter)",
    )
    p.add_argument(
        "--batch-size", type=int, help="windows per compiled call of the model, at most (default: 4 on CPU, 64 else)"
    )
    d = Limits()
    p.add_argument(
        "--max-batch-tokens",
        type=int,
        default=d.max_batch_tokens,
        help="tokens the requests of one batch bring, windows counted at their padded lengths",
    )
    p.add_argument("--max-wait-ms", type=float, default=d.max_wait_ms, help="a batch's wait for more after its first")
    p.add_argument("--max-queued-requests", type=int, default=d.max_queued_requests, help="past it: 503, Retry-After")
    p.add_argument("--max-payload-bytes", type=int, default=d.max_payload_bytes, help="a request's body; past it: 413")
    p.add_argument(
        "--max-context-tokens", type=int, default=d.max_context_tokens, help="a request's contexts; past it: 413"
    )
    p.add_argument("--timeout", type=float, default=d.timeout_s, help="seconds to answer a request; past it: 504")
    p.add_argument("--drain-seconds", type=float, default=30.0, help="on SIGTERM, the longest wait for answers due")
    p.add_argument("--no-warm-up", action="store_true", help="serve at once, compiling each shape when first asked")
    precision.add_flag(p)
    runtimes.add_flag(p)
    p.add_argument("--compilation-cache", default="", help=compilation_cache.HELP)
    return p


def limits_of(args: argparse.Namespace) -> Limits:
    """The limits the flags set, each checked."""
    limits = Limits(
        args.max_batch_tokens,
        args.max_wait_ms,
        args.max_queued_requests,
        args.max_payload_bytes,
        args.max_context_tokens,
        args.timeout,
    )
    for flag, value, least in (
        ("--max-batch-tokens", limits.max_batch_tokens, 1),
        ("--max-wait-ms", limits.max_wait_ms, 0),
        ("--max-queued-requests", limits.max_queued_requests, 1),
        ("--max-payload-bytes", limits.max_payload_bytes, 1),
        ("--max-context-tokens", limits.max_context_tokens, 1),
        ("--drain-seconds", args.drain_seconds, 0),
    ):
        if not value >= least:  # also refuses nan
            raise Error(f"{flag} {value}: must be at least {least}")
    if not args.timeout > 0:
        raise Error(f"--timeout {args.timeout}: must be positive")
    if not 0 < args.port < 65536:
        raise Error(f"--port {args.port}: must be 1 to 65535")
    return limits


def main(argv=None, prog: str = "python -m jaxqa.serve") -> int:
    args = parser(prog).parse_args(argv)
    try:
        import uvicorn

        from jaxqa import pipeline
        from jaxqa.serve.app import create_app
    except ImportError as err:
        print(
            f'{prog}: error: serving needs the extra jaxqa[serve] ({err}): pip install "jaxqa[serve]"', file=sys.stderr
        )
        return 2
    with log_to(sys.stderr):
        logging.getLogger("jaxqa.squad.features").setLevel(logging.WARNING)  # no line per request
        try:
            limits = limits_of(args)
            compilation_cache.enable(args.compilation_cache)
            qa = pipeline(
                args.model,
                max_seq_len=args.max_seq_len,
                batch_size=args.batch_size,
                precision=args.precision,
                runtime=args.runtime,
            )
        except Error as err:
            print(f"{prog}: error: {err}", file=sys.stderr)
            return 2
        app = create_app(qa, limits, warm_up=not args.no_warm_up)

        class Server(uvicorn.Server):
            """uvicorn's server, which on a stop signal first marks the app draining
            (it refuses new requests, `/ready` says no), then shuts down as uvicorn
            does: it stops listening and waits for the requests under way."""

            def handle_exit(self, sig, frame) -> None:
                app.state.serving.update(draining=True, ready=False)
                super().handle_exit(sig, frame)

        config = uvicorn.Config(
            app, host=args.host, port=args.port, timeout_graceful_shutdown=args.drain_seconds, log_level="warning"
        )
        log.info(f"serving {args.model} on http://{args.host}:{args.port}")
        # uvicorn raises a stop signal again once it has shut down, for the handler
        # it found: here the drain is the stop, and the process exits 0.
        for stop in (signal.SIGINT, signal.SIGTERM):
            signal.signal(stop, lambda signum, frame: None)
        Server(config).run()
        log.info("stopped; every accepted request was answered")
    return 0
