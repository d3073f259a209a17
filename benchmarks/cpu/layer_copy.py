"""The pipeline's XLA forward reading each layer's weights in place, against the
scanned forward before it, which copies each layer's slice of the stacked
weights before its products read it; side by side in one run on this machine.

    python benchmarks/cpu/layer_copy.py --before COMMIT [--parts program,latency]
        [--models bert-base,minilm] [--precisions fp32,bf16,int8] [--questions 24] [--warm 2]

"Before" (the scanned forward) runs from a git worktree of COMMIT, "after"
from this tree; weights come from `lib/same_weights.py`. Per model and precision:

- program: what XLA compiles for the pipeline's forward at 1 x 384 tokens
  (`load_pretrained(folder, precision).runtime`), in a fresh process with no
  persistent compilation cache: before, one program whose layers are a loop;
  after, the embeddings, a layer's program per run of like layers, the span
  head. Per side: the programs, the seconds to compile them, the while loops
  in their optimized HLO, the slices of at least 1 MiB they make (instructions
  that slice, but for the embeddings' slice of the position table, and their
  megabytes; inside a loop, each is made once per layer: these are the
  copies of the layers' weights), and the largest temporaries of XLA's memory
  analysis;
- latency: the pipeline one real SQuAD dev question at a time (`lib/sides.py`'s
  `warm_latency`, each side in a process of its own, taking the questions in
  turns): the seconds its `warm_up()` takes to compile every bucket, its median
  latency, and its ratio to the `transformers` pipeline on the same weights in
  float32 and under bfloat16 autocast.

Results: benchmarks/results/layer_copy_cpu.json.
"""

import argparse
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for lib
from lib import inputs, paths, records, same_weights, sides, trees

LENGTH = 384
SLICE_BYTES = 1 << 20
BYTES = {"f32": 4, "s32": 4, "bf16": 2, "u16": 2, "f16": 2, "s8": 1, "u8": 1, "pred": 1}
# An instruction that slices, its output type and shape; the embeddings' slice
# of the position table is left out.
SLICE = re.compile(r"= (\w+)\[([\d,]*)\]\S* (?:dynamic-)?slice\(.*op_name=\"(?![^\"]*/(?:e|E)mbeddings/)")


# ---------------------------------------------------------------- in the measured process


def program(job: dict) -> dict:
    """What XLA makes of the pipeline's forward over `job`'s model: one program
    scanned (before), or the programs that run it layer by layer (this tree)."""
    import numpy as np

    import jaxqa

    runtime = jaxqa.load_pretrained(job["folder"], job["precision"]).runtime
    window = np.zeros((1, LENGTH), np.int32)
    forward = runtime.forward
    started = time.perf_counter()
    if job["side"] == "scanned":  # the forward before: one jitted program
        lowered = [forward._jitted.lower(runtime.params, window, window, window)]  # type: ignore[attr-defined]
    else:
        lowered = forward.lowered(runtime.params, window, window, window)
    compiled = [program.compile() for program in lowered]
    seconds = time.perf_counter() - started
    texts = [program.as_text() for program in compiled]
    sizes = [
        BYTES[t] * int(np.prod([int(d) for d in dims.split(",") if d])) for x in texts for t, dims in SLICE.findall(x)
    ]
    big = [size for size in sizes if size >= SLICE_BYTES]
    return {
        "programs": len(compiled),
        "compile_s": round(seconds, 2),
        "while_loops": sum(text.count(" while(") for text in texts),
        "weight_slices": len(big),
        "weight_slice_mb": round(sum(big) / 1e6, 1),
        "temp_mb": round(max(program.memory_analysis().temp_size_in_bytes for program in compiled) / 1e6, 1),
    }


# ---------------------------------------------------------------- the driver


def program_rows(before: Path, folders: dict[str, Path], precisions: list[str]) -> list[dict]:
    rows = []
    for name, folder in folders.items():
        for mode in precisions:
            for side, tree in (("scanned", before), ("in place", paths.ROOT)):
                got = trees.run_job(tree, __file__, {"folder": str(folder), "precision": mode, "side": side})
                rows.append({"part": "program", "model": name, "precision": mode, "forward": side, **got})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def latency_rows(before: Path, pairs: dict, precisions: list[str], questions: list[dict], warm: int) -> list[dict]:
    rows = []
    for name, (hf_folder, folder) in pairs.items():
        # Side names begin with "jaxqa" so that warm_latency reports their warm-up.
        runs = {
            f"jaxqa-{side}-{mode}": (f"jaxqa-{mode}", folder) for mode in precisions for side in ("scanned", "inplace")
        }
        runs |= {f"pytorch-{mode}": (f"pytorch-{mode}", hf_folder) for mode in ("fp32", "bf16")}
        scanned = {f"jaxqa-scanned-{mode}": before for mode in precisions}
        got = {row["side"]: row for row in sides.warm_latency(runs, questions, warm, None, scanned)}
        pytorch = {mode: got[f"pytorch-{mode}"]["median_ms"] for mode in ("fp32", "bf16")}
        for mode in precisions:
            old, new = got[f"jaxqa-scanned-{mode}"], got[f"jaxqa-inplace-{mode}"]
            rows.append(
                {
                    "part": "latency",
                    "model": name,
                    "precision": mode,
                    "scanned_warm_up_s": old["warm_up_s"],
                    "in_place_warm_up_s": new["warm_up_s"],
                    "scanned_median_ms": old["median_ms"],
                    "in_place_median_ms": new["median_ms"],
                    "in_place/scanned": round(new["median_ms"] / old["median_ms"], 3),
                    "pytorch_fp32_median_ms": pytorch["fp32"],
                    "pytorch_bf16_median_ms": pytorch["bf16"],
                    "in_place/pytorch_fp32": round(new["median_ms"] / pytorch["fp32"], 3),
                    "in_place/pytorch_bf16": round(new["median_ms"] / pytorch["bf16"], 3),
                    "scanned_agree_with_pytorch_fp32": old["agree_with_pytorch_fp32"],
                    "in_place_agree_with_pytorch_fp32": new["agree_with_pytorch_fp32"],
                    "recompiled_after_warm_up": old["recompiled_after_warm_up"] or new["recompiled_after_warm_up"],
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--job", help=argparse.SUPPRESS)  # one program, in a process of its own
    p.add_argument("--before", help="the commit whose forward scans the layers")
    p.add_argument("--parts", default="program,latency")
    p.add_argument("--models", default="bert-base,minilm", help="of lib/same_weights.py")
    p.add_argument("--precisions", default="fp32,bf16,int8")
    p.add_argument("--questions", type=int, default=24)
    p.add_argument("--warm", type=int, default=2, help="questions asked of every side before timing")
    p.add_argument("--squad-dir", type=Path, default=paths.SQUAD)
    p.add_argument("--workdir", type=Path, default=paths.WEIGHTS)
    args = p.parse_args()
    if args.job:
        print(json.dumps(program(json.loads(args.job))))
        return
    if not args.before:
        p.error("--before COMMIT is needed")
    before = trees.worktree(args.before)
    pairs = {name: same_weights.folders(name, args.workdir) for name in args.models.split(",")}
    precisions, parts = args.precisions.split(","), args.parts.split(",")
    rows = []
    if "program" in parts:
        rows += program_rows(before, {name: folder for name, (_, folder) in pairs.items()}, precisions)
    if "latency" in parts:
        questions = inputs.squad_questions(args.squad_dir / "dev-v1.1.json", args.questions)
        rows += latency_rows(before, pairs, precisions, questions, args.warm)
    settings = {
        "before": args.before,
        "parts": parts,
        "length": LENGTH,
        "questions": args.questions,
        "warm": args.warm,
        "squad_file": "dev-v1.1.json",
        "precisions": precisions,
    }
    records.write(settings, rows)


if __name__ == "__main__":
    main()
