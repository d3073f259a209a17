"""The sides a latency benchmark compares, one question at a time: jaxqa's
pipeline in each precision, and with `runtime` auto over the checkpoint with
the run's exports beside it (`jaxqa-auto`, its measurement made afresh in the
side's start-up), the `transformers` question-answering pipeline in
float32, under bfloat16 autocast and with PyTorch's dynamic int8, jaxqa's
pipeline over its ONNX and LiteRT exports, and over `torch.onnx.export` of the
transformers model under ONNX Runtime. `side_folder` gives the folder a side
runs; `warm_latency` runs each side in a process of its own and times them on
the same questions, taken in turns.
"""

import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from jaxqa.checkpoint import copy_tokenizer
from lib import timing

SIDES = (
    "jaxqa-auto",
    "jaxqa-fp32",
    "jaxqa-bf16",
    "jaxqa-int8",
    "pytorch-fp32",
    "pytorch-bf16",
    "pytorch-int8",
    "onnx-fp32",
    "onnx-int8",
    "litert-fp32",
    "litert-int8",
    "torchonnx-fp32",
    "torchonnx-int8",
)
SERVED_BY_JAXQA = ("jaxqa", "onnx", "litert", "torchonnx")  # runtimes that jaxqa's pipeline serves


def serve(side: str, folder: str, warm_questions: list[dict], bucket_step: int | None, tree: str | None, conn) -> None:
    """A worker process: builds one side's pipeline (jaxqa from the checkout
    `tree`, if given), warms it up, then answers each question it is sent with
    (answer, seconds, compiled programs so far)."""
    started = time.perf_counter()
    runtime, mode = side.split("-")
    compiling = 0.0
    runs = side
    if runtime in SERVED_BY_JAXQA:
        if tree:  # this module's imports brought this checkout's jaxqa: that of `tree` replaces it
            for name in [name for name in sys.modules if name.split(".")[0] == "jaxqa"]:
                del sys.modules[name]
            sys.path.insert(0, tree)
        import jaxqa

        buckets = None if bucket_step is None else [*range(bucket_step, 384, bucket_step), 384]
        if mode == "auto":  # measured in this start-up, whatever an earlier run cached
            os.environ["JAXQA_CACHE_DIR"] = tempfile.mkdtemp(prefix="jaxqa-auto-")
        ours = jaxqa.pipeline(folder, seq_buckets=buckets, precision=mode if runtime == "jaxqa" else "auto")
        info = getattr(ours, "info", None)  # a checkout before pipelines said what they run has none
        runs = f"{info['runtime']} {info['precision']}" if info else side
        compiling = time.perf_counter()
        ours.warm_up()
        compiling = time.perf_counter() - compiling
        ask: Callable = ours
    else:
        import torch
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
        qa = transformers.pipeline("question-answering", model=folder, tokenizer=folder, device="cpu")
        if mode == "int8":
            qa.model = torch.ao.quantization.quantize_dynamic(qa.model, {torch.nn.Linear}, dtype=torch.qint8)

        def ask(**pair):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
                return qa(**pair)

    for pair in warm_questions:
        ask(**pair)
    conn.send((time.perf_counter() - started, compiling, runs))
    while (pair := conn.recv()) is not None:
        begun = time.perf_counter()
        answer = ask(**pair)
        conn.send((answer, time.perf_counter() - begun, getattr(ask, "traces", 0)))


def warm_latency(
    runs: dict[str, tuple[str, Path]],
    questions: list[dict],
    warm: int,
    bucket_step: int | None,
    trees: dict[str, Path] | None = None,
) -> list[dict]:
    """A row per side: `runs` maps each side's name to what runs (one of SIDES) and
    its folder; `trees` the jaxqa sides that run another checkout to its folder.
    Each side runs in a process of its own (their thread pools never compete),
    warmed up one after the other; they take the questions in turns, one at a
    time."""
    sides = list(runs)
    context = multiprocessing.get_context("spawn")
    workers, ready, warm_up, ran = {}, {}, {}, {}
    for side, (kind, folder) in runs.items():
        ours, theirs = context.Pipe()
        tree = (trees or {}).get(side)
        worker = context.Process(
            target=serve, args=(kind, str(folder), questions[:warm], bucket_step, tree and str(tree), theirs)
        )
        worker.start()
        ready[side], warm_up[side], ran[side] = ours.recv()
        workers[side] = (worker, ours)
    seconds: dict[str, list[float]] = {side: [] for side in sides}
    answers: dict[str, list[tuple]] = {side: [] for side in sides}
    programs: dict[str, list[int]] = {side: [] for side in sides}
    for pair in questions:
        for side, (_, conn) in workers.items():
            conn.send(pair)
            answer, took, traces = conn.recv()
            answers[side].append((answer["answer"], answer["start"], answer["end"]))
            seconds[side].append(took)
            programs[side].append(traces)
    for worker, conn in workers.values():
        conn.send(None)
        worker.join()
    medians = {side: timing.summary(seconds[side])["median_ms"] for side in sides}
    fastest_pytorch = min((side for side in sides if side.startswith("pytorch")), key=medians.__getitem__, default=None)
    rows = []
    for side in sides:
        times = timing.summary(seconds[side])
        row = {"side": side, "median_ms": times["median_ms"], "p90_ms": times["p90_ms"]}
        if ran[side] != side:
            row["runs"] = ran[side]  # what `auto` chose
        if "pytorch-fp32" in sides:
            row["vs_pytorch_fp32"] = round(times["median_ms"] / medians["pytorch-fp32"], 3)
        if fastest_pytorch:
            row["vs_fastest_pytorch"] = round(times["median_ms"] / medians[fastest_pytorch], 3)
        if "pytorch-fp32" in sides:
            agree = sum(a == b for a, b in zip(answers[side], answers["pytorch-fp32"]))
            row["agree_with_pytorch_fp32"] = f"{agree}/{len(questions)}"
        if side.split("-")[0] in SERVED_BY_JAXQA:
            row["ready_s"] = round(ready[side], 1)
            row["warm_up_s"] = round(warm_up[side], 1)  # compiling every bucket
            row["recompiled_after_warm_up"] = programs[side][-1] != programs[side][0]
        rows.append(row)
    return rows


def torch_onnx(hf_folder: Path, out: Path, precision: str) -> Path:
    """An export folder (as `jaxqa-export` writes) holding `torch.onnx.export` of
    the transformers model at `hf_folder`, int32 inputs with batch and sequence
    free; int8 is ONNX Runtime's dynamic quantization of it, as jaxqa-export's."""
    import torch
    import transformers
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from jaxqa.export import write

    if (out / write.RECORD_FILE).is_file():
        return out
    model = transformers.AutoModelForQuestionAnswering.from_pretrained(hf_folder).eval()
    dummy = torch.ones((1, 16), dtype=torch.int32)
    out.mkdir(parents=True, exist_ok=True)
    fp32 = out / ("model.onnx" if precision == "fp32" else "model-fp32.onnx")
    axes = {name: {0: "batch", 1: "sequence"} for name in write.INPUTS + write.OUTPUTS}
    with torch.no_grad():
        torch.onnx.export(
            model,
            (dummy, dummy, dummy),
            str(fp32),
            input_names=list(write.INPUTS),
            output_names=list(write.OUTPUTS),
            dynamic_axes=axes,
            dynamo=False,
        )
    if precision == "int8":
        quantize_dynamic(fp32, out / write.MODEL_FILES["onnx"], per_channel=True, weight_type=QuantType.QInt8)
        fp32.unlink()
    shutil.copy2(hf_folder / "config.json", out / "config.json")
    copy_tokenizer(hf_folder, out)
    record = {
        "format": "onnx",
        "model_type": json.loads((hf_folder / "config.json").read_text())["model_type"],
        "inputs": list(write.INPUTS),
        "outputs": list(write.OUTPUTS),
    }
    (out / write.RECORD_FILE).write_text(json.dumps({**record, "precision": precision, "made_by": "torch.onnx.export"}))
    return out


def side_folder(side: str, hf_folder: Path, our_folder: Path, workdir: Path) -> Path:
    """The folder a side runs: jaxqa's exports made anew by each run (the
    exporter may have changed since the last), the others the first time
    (`jaxqa-auto`'s is `with_exports_beside`)."""
    runtime, mode = side.split("-")
    if runtime in ("onnx", "litert"):
        from jaxqa.export import write

        return write.export(our_folder, workdir / f"{our_folder.name}-{runtime}-{mode}", runtime, mode, overwrite=True)
    if runtime == "torchonnx":
        return torch_onnx(hf_folder, workdir / f"{hf_folder.name}-torchonnx-{mode}", mode)
    return our_folder if runtime == "jaxqa" else hf_folder


def with_exports_beside(our_folder: Path, exports: list[Path], workdir: Path) -> Path:
    """A checkpoint folder of links to `our_folder`'s files, and in its
    `exports/` links to `exports`, the export sides' folders of this run."""
    from jaxqa.export.format import EXPORTS_FOLDER

    folder = workdir / f"{our_folder.name}-auto"
    shutil.rmtree(folder, ignore_errors=True)
    (folder / EXPORTS_FOLDER).mkdir(parents=True)
    for path in our_folder.iterdir():
        (folder / path.name).symlink_to(path.resolve())
    for export in exports:
        (folder / EXPORTS_FOLDER / export.name.removeprefix(f"{our_folder.name}-")).symlink_to(export.resolve())
    return folder
