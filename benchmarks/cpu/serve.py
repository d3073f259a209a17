"""The HTTP service under load on a CPU: `jaxqa serve` against a FastAPI server
around the `transformers` question-answering pipeline, on the same weights and
the same real SQuAD dev questions, at rising concurrency and rising rates.

    python benchmarks/cpu/serve.py [--models minilm,bert-base]
        [--sides jaxqa-fp32,jaxqa-fast,jaxqa-nobatch,transformers] [--fast auto]
        [--clients 1,4,16,64] [--questions minilm=200,bert-base=64]
        [--load-fractions 0.25,0.5,0.75,1,1.25 | --rates 5,10,20]
        [--p99-bound-ms minilm=250,bert-base=1500] [--checkpoint runs/minilm-cpu/train/model]
        [--variant WORD]

Sides, each a server process of its own on a free port of 127.0.0.1, started,
waited for (`GET /ready`), warmed up with `--warm` questions one at a time,
loaded, and stopped (SIGTERM) before the next starts, so that no two share the
cores:
- jaxqa-fp32: `python -m jaxqa.serve JAXQA_FOLDER --precision fp32`, dynamic
  batching as `jaxqa serve` sets it by default (`--batch-size 4` on a CPU,
  `--max-batch-tokens 8192 --max-wait-ms 0`: a batch takes what arrived while
  the model ran the one before);
- jaxqa-fast: the same server in the mode `--fast` names: a precision
  (`auto`, the default, is the fastest that keeps float32's answers on this CPU
  by jaxqa's own rule: bfloat16 on CPUs with bfloat16 units, float32 on
  AVX2 alone), or an export that the script makes from the jaxqa folder with
  `jaxqa.export.write.export` and serves: `onnx-fp32`, `onnx-int8`,
  `litert-fp32`, `litert-int8` (on AVX2 alone, `litert-fp32` ran one question
  at a time fastest: latency_export_avx2_cpu.json). The `serves` column gives
  the runtime and precision the server reports (`GET /info`);
- jaxqa-nobatch: jaxqa-fp32 with batching off, `--max-batch-tokens 1
  --max-wait-ms 0`: the batcher always takes the first request waiting, and
  no other fits the budget, so each call of the model runs one request's
  windows;
- transformers: `benchmarks/lib/hf_server.py HF_FOLDER`, FastAPI around
  `pipeline("question-answering", device=-1)` in float32, answering one request
  at a time, in the same JSON.
The jaxqa sides share a compilation cache made for the run, so a side whose
programs an earlier side compiled reads them (its `ready_s` is short).

Loads, each over the model's `--questions` (the first question of evenly
spaced paragraphs of dev-v1.1.json, the same list in the same order for every
side), each bounded by `--load-seconds` (no request is sent after it) and
each request by `--request-timeout`; a request is timed from its send (closed
loop) or its scheduled arrival (open loop) to its full answer, over httpx's
asyncio client in this process:
- closed loop, at each of `--clients` concurrent clients: each client sends
  the next question as soon as its previous answer arrives;
- open loop, MLPerf's server scenario: Poisson arrivals of the model's
  `--questions` questions at each rate, in questions/s: `--load-fractions` of
  the side's capacity (its highest closed-loop questions/s), or the same
  `--rates` for every side. A rate is within the bound when every question
  was sent and answered 200 and the p99 latency is at most the model's
  `--p99-bound-ms`; the side's summary row gives the highest rate within it
  at which every lower rate was too. Over 64 questions (bert-base's default),
  the p99 is close to the slowest answer.

Per model, side and load: questions sent and answered, questions/s (answered
over the load's wall time), latency p50/p95/p99 (ms, answered questions),
errors by HTTP status or client exception, for the jaxqa sides the calls of the
model and the requests and windows per call (`GET /metrics`,
`jaxqa_batch_windows`, before and after the load), the server's CPU busy share
(its user+system CPU seconds from /proc/<pid>/stat over the load's wall time,
over the cores available) and this process's (the load's own cost), and
agreement: the share of answers (text, start, end) equal to the transformers
side's and to jaxqa-fp32's answer to the same question (its first, in any
load). Weights come from `lib/same_weights.py`: the real MiniLM with a span
head from seed 0 (or `--checkpoint`, a fine-tuned jaxqa checkpoint, in its
place) and BERT-base drawn from seed 0.

On a 2-core CPU the default run takes about 40 minutes. Results:
benchmarks/results/serve_cpu.json (serve_<WORD>_cpu.json with --variant WORD).
"""

import argparse
import asyncio
import collections
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for lib
from lib import inputs, paths, records, same_weights, sides

SIDES = ("jaxqa-fp32", "jaxqa-fast", "jaxqa-nobatch", "transformers")
EXPORTS = ("onnx-fp32", "onnx-int8", "litert-fp32", "litert-int8")
PRECISIONS = ("auto", "bf16", "int8", "fp32")
HF_SERVER = Path(__file__).resolve().parents[1] / "lib" / "hf_server.py"
NO_BATCHING = ["--max-batch-tokens", "1", "--max-wait-ms", "0"]


# ---------------------------------------------------------------- servers


class Server:
    """A server process on a free port of 127.0.0.1, its output in `log`."""

    def __init__(self, command: list[str], log: Path, start_timeout: float):
        with socket.socket() as probe:  # a free port, for the server to bind at once
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        started = time.perf_counter()
        with log.open("w") as out:
            self.process = subprocess.Popen([*command, "--port", str(port)], stdout=out, stderr=subprocess.STDOUT)
        try:
            while not self.ready():
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"the server stopped ({self.process.returncode}); its log ends:\n{self.log_tail()}"
                    )
                if time.perf_counter() - started > start_timeout:
                    raise RuntimeError(f"no server ready within {start_timeout:g}s; its log ends:\n{self.log_tail()}")
                time.sleep(0.5)
        except BaseException:  # Ctrl-C included: no server is left behind
            self.stop()
            raise
        self.ready_s = time.perf_counter() - started

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/ready", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def log_tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])

    def cpu_seconds(self) -> float:
        """The process's user+system CPU seconds so far, all its threads."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=30)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)  # jaxqa serve drains, then exits
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def batch_counts(server: Server) -> tuple[float, float]:
    """(windows run, calls of the model) so far, from jaxqa serve's `jaxqa_batch_windows` histogram."""
    values = {}
    for line in server.get("/metrics").text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("jaxqa_batch_windows_sum", "jaxqa_batch_windows_count"):
            values[name] = float(value)
    return values["jaxqa_batch_windows_sum"], values["jaxqa_batch_windows_count"]


def jaxqa_flags(side: str, fast: str) -> list[str]:
    """What `jaxqa serve` is given for a jaxqa side, after the model (an export
    runs in its own precision)."""
    if side == "jaxqa-fast":
        return [] if fast in EXPORTS else ["--precision", fast]
    return ["--precision", "fp32", *(NO_BATCHING if side == "jaxqa-nobatch" else [])]


def side_command(side: str, fast: str, hf_folder: Path, our_folder: Path, workdir: Path, cache: Path) -> list[str]:
    """The command that serves a side, but its port."""
    if side == "transformers":
        return [sys.executable, str(HF_SERVER), str(hf_folder)]
    model = our_folder
    if side == "jaxqa-fast" and fast in EXPORTS:
        model = sides.side_folder(fast, hf_folder, our_folder, workdir)  # exported anew by each run
    serve = [sys.executable, "-m", "jaxqa.serve", str(model), *jaxqa_flags(side, fast)]
    return [*serve, "--compilation-cache", str(cache)]


# ---------------------------------------------------------------- loads

Result = tuple[str, float, tuple | None]  # (status, seconds, (text, start, end) of a 200 answer)


async def ask(client: httpx.AsyncClient, url: str, pair: dict, since: float) -> Result:
    """One question: its status ("200", another HTTP status, or the client
    exception's name), the seconds from `since` to its full answer, and the answer."""
    try:
        response = await client.post(url, json={"inputs": pair})
    except httpx.HTTPError as err:
        return type(err).__name__, time.perf_counter() - since, None
    took = time.perf_counter() - since
    if response.status_code != 200:
        return str(response.status_code), took, None
    answer = response.json()
    return "200", took, (answer["answer"], answer["start"], answer["end"])


async def closed_loop(
    url: str, questions: list[dict], clients: int, deadline: float, timeout: float
) -> tuple[list[Result | None], float]:
    """`clients` clients, each sending the next question as soon as its last is
    answered: a result per question (None: not sent by the deadline) and the wall seconds."""
    results: list[Result | None] = [None] * len(questions)
    order = iter(range(len(questions)))  # shared: each client takes the next question
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        started = time.perf_counter()

        async def one_client() -> None:
            for i in order:
                if time.perf_counter() - started > deadline:
                    return
                results[i] = await ask(client, url, questions[i], time.perf_counter())

        await asyncio.gather(*(one_client() for _ in range(clients)))
        return results, time.perf_counter() - started


async def open_loop(
    url: str, questions: list[dict], rate: float, seed: int, deadline: float, timeout: float
) -> tuple[list[Result | None], float]:
    """The questions sent at Poisson arrivals of `rate` per second, whatever the
    answers under way; each timed from its scheduled arrival."""
    gaps = np.random.default_rng(seed).exponential(1 / rate, len(questions))
    arrivals = np.cumsum(gaps) - gaps[0]  # the first at once
    results: list[Result | None] = [None] * len(questions)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        started = time.perf_counter()

        async def one(i: int, at: float) -> None:
            results[i] = await ask(client, url, questions[i], at)

        tasks = []
        for i, arrival in enumerate(arrivals):
            if arrival > deadline:
                break
            at = started + float(arrival)
            await asyncio.sleep(max(at - time.perf_counter(), 0.0))
            tasks.append(asyncio.create_task(one(i, at)))
        await asyncio.gather(*tasks)
        return results, time.perf_counter() - started


def measure(server: Server, jaxqa: bool, load: Coroutine) -> tuple[dict, list[tuple | None]]:
    """Runs `load` (a coroutine of closed_loop or open_loop) against `server`: its
    figures, and the answer to each question (None where it has none)."""
    windows, calls = batch_counts(server) if jaxqa else (0.0, 0.0)
    server_cpu, own_cpu = server.cpu_seconds(), time.process_time()
    results, wall = asyncio.run(load)
    server_cpu, own_cpu = server.cpu_seconds() - server_cpu, time.process_time() - own_cpu
    sent = [result for result in results if result is not None]
    answered_ms = np.array([1e3 * seconds for status, seconds, _ in sent if status == "200"])
    errors = dict(collections.Counter(status for status, _, _ in sent if status != "200"))
    percentiles = np.percentile(answered_ms, [50, 95, 99]).round(1).tolist() if answered_ms.size else [None] * 3
    cores = len(os.sched_getaffinity(0))
    row = {
        "sent": len(sent),
        "answered": int(answered_ms.size),
        "qps": round(answered_ms.size / wall, 2),
        **dict(zip(("p50_ms", "p95_ms", "p99_ms"), percentiles)),
        "errors": errors,
        "wall_s": round(wall, 1),
        "server_cpu": round(server_cpu / wall / cores, 3),
        "client_cpu": round(own_cpu / wall / cores, 3),
    }
    if jaxqa:
        after_windows, after_calls = batch_counts(server)
        calls = after_calls - calls
        row["calls"] = int(calls)
        row["requests_per_call"] = round(answered_ms.size / calls, 2) if calls else None
        row["windows_per_call"] = round((after_windows - windows) / calls, 2) if calls else None
    return row, [result[2] if result else None for result in results]


def highest_rate_within(rows: list[dict]) -> float | None:
    """The highest offered rate within the bound at which every lower rate was too."""
    best = None
    for row in sorted(rows, key=lambda row: row["offered_qps"]):
        if not row["within_bound"]:
            break
        best = row["offered_qps"]
    return best


def agreement(answers: list[tuple | None], reference: dict[int, tuple]) -> float | None:
    """The share of the questions answered by both whose answers (text, start, end) are equal."""
    both = [(answer, reference[i]) for i, answer in enumerate(answers) if answer is not None and i in reference]
    return round(sum(a == b for a, b in both) / len(both), 3) if both else None


# ---------------------------------------------------------------- flags


def per_model(p: argparse.ArgumentParser, text: str, models: list[str], flag: str, cast) -> dict:
    """`--flag 200` (every model) or `--flag minilm=200,bert-base=64` (a default may come first)."""
    default, named = None, {}
    for item in text.split(","):
        name, _, value = item.rpartition("=")
        if name:
            named[name] = cast(value)
        else:
            default = cast(value)
    if missing := [model for model in models if model not in named and default is None]:
        p.error(f"{flag} {text!r} gives no value for {', '.join(missing)}")
    return {model: named.get(model, default) for model in models}


def integers(text: str) -> list[int]:
    return [int(item) for item in text.split(",") if item]


def numbers(text: str) -> list[float]:
    return [float(item) for item in text.split(",") if item]


def run_side(server: Server, head: dict, questions: list[dict], args, bound: float) -> list[tuple[dict, list]]:
    """A side's loads against its server, warmed up first: (row, answer to each
    question) per load, then its summary row."""
    jaxqa = head["side"] != "transformers"
    with httpx.Client(timeout=args.request_timeout) as client:
        for pair in questions[: args.warm]:
            client.post(server.url, json={"inputs": pair}).raise_for_status()
    measured = []
    for n in args.clients:
        row, got = measure(
            server, jaxqa, closed_loop(server.url, questions, n, args.load_seconds, args.request_timeout)
        )
        measured.append(({**head, "load": "closed", "clients": n, **row}, got))
        print(measured[-1][0], flush=True)
    capacity = max((row["qps"] for row, _ in measured), default=0.0)
    open_rows = []
    for rate in args.rates or [round(share * capacity, 2) for share in args.load_fractions]:
        load = open_loop(server.url, questions, rate, args.seed, args.load_seconds, args.request_timeout)
        row, got = measure(server, jaxqa, load)
        within = row["answered"] == len(questions) and row["p99_ms"] <= bound  # each sent, and answered 200
        open_rows.append({**head, "load": "open", "offered_qps": rate, **row, "within_bound": within})
        measured.append((open_rows[-1], got))
        print(open_rows[-1], flush=True)
    summary = {
        **head,
        "load": "summary",
        "ready_s": round(server.ready_s, 1),
        "p99_bound_ms": bound,
        "highest_rate_within_bound": highest_rate_within(open_rows),
    }
    return [*measured, (summary, [])]


def agree(measured: list[tuple[dict, list]], reference: str, column: str) -> None:
    """Adds to each load's row the share of its answers equal to the `reference`
    side's first answer to the same question, per model."""
    for model in dict.fromkeys(row["model"] for row, _ in measured):
        theirs: dict[int, tuple] = {}
        for row, got in measured:
            if row["model"] == model and row["side"] == reference:
                for i, answer in enumerate(got):
                    if answer is not None:
                        theirs.setdefault(i, answer)
        for row, got in measured:
            if row["model"] == model and row["load"] != "summary":
                row[column] = agreement(got, theirs)


def serve_each(args: argparse.Namespace, models: list[str], chosen: list[str], counts: dict, bounds: dict) -> list:
    """Each model's sides served in turn, each loaded as `run_side` does: their rows."""
    logs = args.workdir / "serve-logs"
    logs.mkdir(parents=True, exist_ok=True)

    measured: list = []
    with tempfile.TemporaryDirectory() as cache:
        for name in models:
            hf_folder, our_folder = same_weights.folders(name, args.workdir)
            label = name
            if name == "minilm" and args.checkpoint:
                hf_folder, our_folder = same_weights.exported(args.checkpoint, args.workdir)
                label = f"finetuned {args.checkpoint}"
            questions = inputs.squad_questions(args.squad_dir / "dev-v1.1.json", counts[name])
            for side in chosen:
                command = side_command(side, args.fast, hf_folder, our_folder, args.workdir, Path(cache))
                print(f"{label} {side}: {' '.join(command)}", flush=True)
                server = Server(command, logs / f"{name}-{side}.log", args.start_timeout)
                try:
                    info = (
                        server.get("/info").json()
                        if side != "transformers"
                        else {"runtime": "pytorch", "precision": "fp32"}
                    )
                    head = {"model": label, "side": side, "serves": f"{info['runtime']} {info['precision']}"}
                    measured += run_side(server, head, questions, args, bounds[name])
                finally:
                    server.stop()
    return measured


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="minilm,bert-base", help=f"of {', '.join(same_weights.NAMES)}")
    p.add_argument("--checkpoint", type=Path, help="a fine-tuned jaxqa checkpoint served in MiniLM's place")
    p.add_argument("--sides", default=",".join(SIDES), help=f"of {', '.join(SIDES)}")
    p.add_argument("--fast", default="auto", choices=PRECISIONS + EXPORTS, help="jaxqa-fast's precision or export")
    p.add_argument("--clients", type=integers, default="1,4,16,64", help="closed loop: concurrent clients, in turn")
    p.add_argument("--questions", default="minilm=200,bert-base=64", help="per load: N, or MODEL=N,...")
    p.add_argument(
        "--load-fractions",
        type=numbers,
        default="0.25,0.5,0.75,1,1.25",
        help="open loop: rates as shares of each side's highest closed-loop questions/s",
    )
    p.add_argument(
        "--rates", type=numbers, default="", help="open loop: questions/s, the same for every side (replaces fractions)"
    )
    p.add_argument("--p99-bound-ms", default="minilm=250,bert-base=1500", help="open loop: N, or MODEL=N,...")
    p.add_argument("--warm", type=int, default=8, help="questions asked one at a time before the loads")
    p.add_argument("--load-seconds", type=float, default=300, help="no request is sent after this, per load")
    p.add_argument("--request-timeout", type=float, default=120, help="the client's, per request")
    p.add_argument("--start-timeout", type=float, default=1800, help="seconds for a server to say ready")
    p.add_argument("--seed", type=int, default=0, help="of the Poisson arrivals")
    p.add_argument("--squad-dir", type=Path, default=paths.SQUAD)
    p.add_argument("--workdir", type=Path, default=paths.WEIGHTS)
    p.add_argument("--variant", default="", help="a word for the record's name, e.g. the machine (avx2)")
    return p


def main() -> None:
    p = parser()
    args = p.parse_args()
    chosen = args.sides.split(",")
    if unknown := set(chosen) - set(SIDES):
        p.error(f"--sides: unknown {sorted(unknown)}; choose from {', '.join(SIDES)}")
    models = [name for name in args.models.split(",") if name]
    if unknown := set(models) - set(same_weights.NAMES):
        p.error(f"--models: unknown {sorted(unknown)}; choose from {', '.join(same_weights.NAMES)}")
    if args.rates:
        args.load_fractions = []
    elif args.load_fractions and not args.clients:
        p.error("--load-fractions need a closed loop (--clients) to measure capacity; give --rates instead")
    counts = per_model(p, args.questions, models, "--questions", int)
    bounds = per_model(p, args.p99_bound_ms, models, "--p99-bound-ms", float)
    measured = serve_each(args, models, chosen, counts, bounds)
    for reference, column in (("transformers", "agree_transformers"), ("jaxqa-fp32", "agree_jaxqa_fp32")):
        if reference in chosen:
            agree(measured, reference, column)

    settings = {
        "models": models,
        "checkpoint": args.checkpoint,
        "sides": chosen,
        "fast": args.fast,
        "jaxqa_serve_flags": {
            side: " ".join(jaxqa_flags(side, args.fast)) for side in chosen if side != "transformers"
        },
        "transformers_server": "benchmarks/lib/hf_server.py",
        "questions": counts,
        "squad_file": "dev-v1.1.json, the first question of evenly spaced paragraphs",
        "clients": args.clients,
        "load_fractions": args.load_fractions,
        "rates": args.rates,
        "p99_bound_ms": bounds,
        "warm": args.warm,
        "load_seconds": args.load_seconds,
        "request_timeout_s": args.request_timeout,
        "seed": args.seed,
        "cores": len(os.sched_getaffinity(0)),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }
    records.write(settings, [row for row, _ in measured], args.variant)


if __name__ == "__main__":
    main()
