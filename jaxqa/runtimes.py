"""Which runtime answers for a checkpoint: XLA in a precision, or one of the
exports kept beside its weights, and `auto`, a short measurement on this
machine of the fastest of them that answers as XLA in float32 does.

`jaxqa.pipeline(checkpoint, runtime=...)` asks `choose`:

- "xla": the checkpoint under XLA, in `precision` (`jaxqa.precision`);
- "onnx", "litert": the export of that format in `CKPT/exports/` (`jaxqa
  export CKPT --format ...` writes it there), of `precision` unless that is
  "auto"; several such exports are measured as `auto` measures;
- "auto": the fastest agreeing candidate, measured;
- None: "auto" where the checkpoint has exports beside it, else XLA; an
  export folder runs in its own runtime, a loaded model as it is.

`auto`'s candidates are the checkpoint under XLA in float32, bfloat16 and int8
(made from one read of its weights) and each export beside it, those of
`precision` only when it is not "auto". Each is built into a pipeline as
`jaxqa.pipeline` builds it (the same windows, buckets and engine), answers
`PROBE`'s questions about `PASSAGE` once (which compiles what it needs), then
`REPEATS` times more, timed. A candidate agrees when each of its answers (text
and start) is XLA float32's, the reference; the fastest of those that agree
most is chosen, and one line says which and why (`log`, "jaxqa.runtimes").

The choice is cached per machine and model in `runtime_choices.json` under
$JAXQA_CACHE_DIR (default ~/.cache/jaxqa), keyed by what it depends on (`key`):
the CPU (or accelerator), its cores, the versions of the runtimes, the model
folder, each candidate folder's files (sizes and times) and the pipeline's
settings. A later pipeline of the same key opens the chosen candidate alone.
An unreadable cache is measured over, and a cache that cannot be written is
only warned of.
"""

import contextlib
import dataclasses
import functools
import hashlib
import importlib.metadata
import json
import logging
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import jax

from jaxqa import precision as precisions
from jaxqa.checkpoint import Source, open_checkpoint
from jaxqa.errors import Error, write_file
from jaxqa.export.format import EXPORT_NAMES, EXPORTS_FOLDER, RECORD_FILE, read_record
from jaxqa.export.format import PRECISIONS as EXPORT_PRECISIONS
from jaxqa.export.runtime import Exported, is_export
from jaxqa.pretrained import Pretrained

if TYPE_CHECKING:
    from jaxqa.pipeline import QuestionAnsweringPipeline

RUNTIMES = ("auto", "xla", "onnx", "litert")
XLA_PRECISIONS = ("fp32", "bf16", "int8")
REFERENCE = "xla fp32"
REPEATS = 5
CACHE_FILE = "runtime_choices.json"
VERSIONED = ("jaxqa", "jax", "jaxlib", "onnxruntime", "ai-edge-litert")

log = logging.getLogger("jaxqa.runtimes")

PASSAGE = (
    "The western honey bee lives in colonies that may hold tens of thousands of insects. Each colony has a "
    "single queen, whose work is to lay eggs, while the male bees, called drones, exist mainly to mate with "
    "queens from other colonies. Nearly all of the other bees are female workers. A worker's tasks change "
    "with age: young workers clean cells and feed the larvae, and older ones guard the entrance and fly out "
    "to gather nectar and pollen. In summer a worker usually lives for about six weeks. Bees build their comb "
    "from beeswax, which workers secrete from glands on the underside of the abdomen. The cells of the comb "
    "are hexagonal, a shape that holds the most honey for the least wax. Honey is made from nectar: workers "
    "add enzymes to it and fan it with their wings until most of its water has evaporated. A forager that "
    "finds a rich patch of flowers shows her sisters where it is with a waggle dance, whose angle gives the "
    "direction of the food relative to the sun and whose length gives its distance. The Austrian scientist "
    "Karl von Frisch studied this dance for decades and shared the Nobel Prize in Physiology or Medicine in 1973."
)

# The probe's questions, each with the span of PASSAGE that answers it.
PROBE = (
    ("What are the male bees called?", "drones"),
    ("What do young workers feed?", "the larvae"),
    ("How long does a worker usually live in summer?", "about six weeks"),
    ("What do bees build their comb from?", "beeswax"),
    ("What shape are the cells of the comb?", "hexagonal"),
    ("What is honey made from?", "nectar"),
    ("How does a forager show her sisters where the flowers are?", "a waggle dance"),
    ("Who studied the waggle dance for decades?", "Karl von Frisch"),
)

Model = Pretrained | Exported
Build = Callable[[Model], "QuestionAnsweringPipeline"]
Answers = list[tuple[str, int]]


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A way to run the model: `runtime` ("xla", "onnx", "litert") in `precision`, from `folder`."""

    runtime: str
    precision: str
    folder: Path

    @property
    def label(self) -> str:
        """Its name in `info` and the cache: "xla bf16", "onnx int8"; an export
        in a folder of a name of its own adds it: "onnx int8 (mine)"."""
        name = f"{self.runtime} {self.precision}"
        own = self.runtime != "xla" and self.folder.name != f"{self.runtime}-{self.precision}"
        return f"{name} ({self.folder.name})" if own else name


@dataclasses.dataclass(frozen=True)
class Choice:
    """The model a pipeline runs, and why (`QuestionAnsweringPipeline.info`).
    `measured` (each candidate's median seconds per probe and whether it
    agrees) and `cached` are `auto`'s."""

    model: Model
    why: str
    measured: dict[str, dict] | None = None
    cached: bool = False


def add_flag(parser) -> None:
    """An inference command's --runtime."""
    parser.add_argument(
        "--runtime",
        default=None,
        choices=RUNTIMES,
        help="what runs the model: xla, an export beside the checkpoint (onnx, litert), or auto: the fastest that "
        "answers as xla fp32, measured once per machine and cached (default: auto where CKPT/exports holds exports)",
    )


def choose(checkpoint: str | Path | Model, runtime: str | None, precision: str, build: Build, settings: dict) -> Choice:
    """The model that `jaxqa.pipeline(checkpoint, runtime=..., precision=...)`
    runs, and why; `build` makes a candidate's pipeline, and `settings` are the
    pipeline's arguments, which the cache's key holds."""
    if runtime not in (None, *RUNTIMES):
        raise Error(f"runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    if precision not in precisions.MODES:
        raise Error(f"precision {precision!r}: choose one of {', '.join(precisions.MODES)}")
    if isinstance(checkpoint, Exported):
        _check_own(checkpoint.folder, checkpoint.format, runtime)
        return Choice(checkpoint.with_precision(precision), _own_why(precision))
    base = checkpoint if isinstance(checkpoint, Pretrained) else open_checkpoint(checkpoint)
    folder = base.folder
    if isinstance(base, Source) and is_export(folder):
        _check_own(folder, read_record(folder / RECORD_FILE, base.config)["format"], runtime)
        return Choice(Exported(base, precision), _own_why(precision))
    exports = exports_beside(folder)
    if runtime is None:
        runtime = "auto" if exports and isinstance(base, Source) else "xla"
    if runtime == "xla":
        model = _xla(base, precision)
        return Choice(model, precisions.decide(model.params, precision)[1])
    candidates = _candidates(folder, exports, runtime, precision)
    opened = Opened(base)
    if len(candidates) == 1:
        if runtime != "auto":
            return Choice(opened(candidates[0]), "asked")
        why = f"{candidates[0].label} ({folder}), the only candidate in {precision}"
        log.info(f"runtime auto: {why}")
        return Choice(opened(candidates[0]), why, {})
    return measure(folder, candidates, opened, build, settings)


def _check_own(folder: Path, fmt: str, runtime: str | None) -> None:
    """Refuses a runtime other than its own asked of an export."""
    if runtime not in (None, "auto", fmt):
        raise Error(
            f"runtime {runtime}: {folder} is {EXPORT_NAMES[fmt]}, which runs under {fmt} only (ask for it, or auto)"
        )


def _own_why(precision: str) -> str:
    return "asked" if precision != "auto" else "an export runs in its own runtime and precision"


def exports_beside(folder: Path) -> dict[Path, tuple[str, str]]:
    """The exports in `folder/exports/`, each with its format and precision, by name."""
    found = {}
    below = folder / EXPORTS_FOLDER
    for path in sorted(below.iterdir()) if below.is_dir() else []:
        if path.is_dir() and is_export(path):
            record = read_record(path / RECORD_FILE, open_checkpoint(path).config)
            found[path] = (record["format"], record["precision"])
    return found


def _candidates(folder: Path, exports: dict[Path, tuple[str, str]], runtime: str, precision: str) -> list[Candidate]:
    """The candidates that `runtime` ("auto", "onnx" or "litert") and `precision` allow; none is an error."""
    xla = [Candidate("xla", p, folder) for p in XLA_PRECISIONS] if runtime == "auto" else []
    beside = [Candidate(fmt, p, path) for path, (fmt, p) in exports.items() if runtime in ("auto", fmt)]
    candidates = [c for c in xla + beside if precision in ("auto", c.precision)]
    if not candidates:
        of = "" if precision == "auto" else f" in {precision}"
        flag = f" --precision {precision}" if precision in EXPORT_PRECISIONS else ""
        raise Error(
            f"runtime {runtime}: no {EXPORT_NAMES[runtime].split(' ', 1)[1]}{of} in {folder / EXPORTS_FOLDER}; "
            f"make one with `jaxqa export {folder} --format {runtime}{flag}`"
        )
    return candidates


def _xla(checkpoint: Source | Pretrained, precision: str) -> Pretrained:
    if isinstance(checkpoint, Pretrained):
        return checkpoint.with_precision(precision)
    return Pretrained.from_source(checkpoint, precision)


class Opened:
    """Opens candidates, those under XLA from one read of the checkpoint's weights."""

    def __init__(self, checkpoint: Source | Pretrained):
        self.checkpoint = checkpoint

    @functools.cached_property
    def float32(self) -> Pretrained:
        return _xla(self.checkpoint, "fp32")

    def __call__(self, candidate: Candidate) -> Model:
        if candidate.runtime == "xla":
            return self.float32.with_precision(candidate.precision)
        return Exported(open_checkpoint(candidate.folder), candidate.precision)


def _answers(qa: "QuestionAnsweringPipeline") -> Answers:
    """`qa`'s answers (text, start) to the probe's questions."""
    answers = qa(question=[question for question, _ in PROBE], context=PASSAGE)
    return [(answer["answer"], answer["start"]) for answer in answers]


def probe(qa: "QuestionAnsweringPipeline", repeats: int = REPEATS) -> tuple[float, Answers]:
    """The median seconds that `qa` takes to answer the probe, over `repeats`
    calls after one that compiles what they need, and its answers."""
    answers = _answers(qa)
    seconds = []
    for _ in range(repeats):
        began = time.perf_counter()
        _answers(qa)
        seconds.append(time.perf_counter() - began)
    return statistics.median(seconds), answers


@contextlib.contextmanager
def _featurizer_quiet():
    """Within the block, the featurizer notes only warnings: a line per probe says nothing."""
    notes = logging.getLogger("jaxqa.squad.features")
    level = notes.level
    notes.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        notes.setLevel(level)


def measure(folder: Path, candidates: list[Candidate], opened: Opened, build: Build, settings: dict) -> Choice:
    """`auto`'s choice among `candidates`, from the cache or measured (and cached)."""
    by_label = {c.label: c for c in candidates}
    path, entry_key = cache_path(), key(folder, candidates, settings)
    entry = _usable(read_cache(path).get(entry_key), by_label)
    if entry is not None:
        log.info(f"runtime auto: {entry['why']} (cached in {path})")
        return Choice(opened(by_label[entry["choice"]]), entry["why"], entry["measured"], cached=True)
    with _featurizer_quiet():
        ran, results, expected = _probe_all(folder, by_label, opened, build)
    agreeing = {label: sum(a == b for a, b in zip(answers, expected)) for label, (_, answers) in results.items()}
    most = max(agreeing.values())
    chosen = min((label for label in results if agreeing[label] == most), key=lambda label: results[label][0])
    why = _why(chosen, by_label[chosen], results, most)
    measured = {
        label: {"seconds": seconds, "agrees": agreeing[label] == len(PROBE)} for label, (seconds, _) in results.items()
    }
    log.info(f"runtime auto: {why}")
    write_cache(path, entry_key, {"model": str(folder), "choice": chosen, "why": why, "measured": measured})
    return Choice(ran[chosen], why, measured)


def _probe_all(
    folder: Path, by_label: dict[str, Candidate], opened: Opened, build: Build
) -> tuple[dict[str, Model], dict[str, tuple[float, Answers]], Answers]:
    """Each candidate's model and its probe's (seconds, answers), and XLA float32's answers."""
    ran: dict[str, Model] = {}
    results: dict[str, tuple[float, Answers]] = {}
    reference = build(opened(Candidate("xla", "fp32", folder)))  # settings it refuses, every candidate would
    if REFERENCE in by_label:
        ran[REFERENCE], results[REFERENCE] = reference.model, probe(reference)
    expected = results[REFERENCE][1] if results else _answers(reference)
    for label, candidate in by_label.items():
        if label in results:
            continue
        try:
            ran[label] = opened(candidate)
            results[label] = probe(build(ran[label]))
        except Error as err:  # settings that this candidate cannot take: a LiteRT export's shorter windows
            log.info(f"runtime auto: {label} left out ({err})")
    return ran, results, expected


def _why(label: str, candidate: Candidate, results: dict[str, tuple[float, Answers]], agreeing: int) -> str:
    """One line: the choice, its time per probe question against the reference's, and how many answers agree."""
    per_question = {name: 1000 * seconds / len(PROBE) for name, (seconds, _) in results.items()}
    said = f"{label} ({candidate.folder}), {per_question[label]:.1f} ms per probe question"
    if label == REFERENCE:
        said += ", and no faster candidate agrees"
    elif REFERENCE in results:
        said += f" against {REFERENCE}'s {per_question[REFERENCE]:.1f} ms"
    return f"{said}; {agreeing}/{len(PROBE)} answers agree with {REFERENCE}'s"


def _usable(entry, by_label: dict[str, Candidate]) -> dict | None:
    """A cache entry that names a candidate and says why, as `measure` writes it; else None."""
    if (
        isinstance(entry, dict)
        and entry.get("choice") in by_label
        and isinstance(entry.get("why"), str)
        and isinstance(entry.get("measured"), dict)
    ):
        return entry
    return None


def cache_path() -> Path:
    """runtime_choices.json in $JAXQA_CACHE_DIR, or in ~/.cache/jaxqa."""
    folder = os.environ.get("JAXQA_CACHE_DIR") or Path.home() / ".cache" / "jaxqa"
    return Path(folder) / CACHE_FILE


def key(folder: Path, candidates: list[Candidate], settings: dict) -> str:
    """The cache key of a measurement: a digest of what its choice depends on."""
    backend = jax.default_backend()
    parts = {
        "device": (precisions.cpu_name() or "cpu") if backend == "cpu" else jax.devices()[0].device_kind,
        "cpu_flags": sorted(precisions.cpu_flags()),
        "cores": os.cpu_count(),
        "versions": _versions(),
        "model": str(folder.resolve()),
        "candidates": {c.label: _files(c.folder) for c in candidates},
        "settings": settings,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _versions() -> dict[str, str]:
    found = {}
    for name in VERSIONED:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def _files(folder: Path) -> list[tuple[str, int, int]]:
    """The files directly in `folder` (weights, config, record, tokenizer): name, size and time."""
    stats = [(path.name, path.stat()) for path in sorted(folder.iterdir()) if path.is_file()]
    return [(name, stat.st_size, stat.st_mtime_ns) for name, stat in stats]


def read_cache(path: Path) -> dict:
    """The cached choices; a missing file is none, an unreadable one is none and a warning."""
    try:
        cache = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        log.warning(f"{path}: cannot read the cached runtime choices ({err}); measuring again")
        return {}
    if not isinstance(cache, dict):
        log.warning(f"{path}: not a JSON object of runtime choices; measuring again")
        return {}
    return cache


def write_cache(path: Path, entry_key: str, entry: dict) -> None:
    """Adds `entry` to the cache at `path`, written whole; a failure is only warned of."""
    cache = read_cache(path)
    cache[entry_key] = entry
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_file(path, json.dumps(cache, indent=1) + "\n")
    except (OSError, Error) as err:
        log.warning(f"{path}: cannot cache the runtime choice ({err}); it is measured again next time")
