"""The encoder core (scanned layers, rematerialisation, fused attention) against
the code before it, side by side in one run on this machine.

    python benchmarks/cpu/encoder_core.py --before COMMIT [--parts compile,memory,step,latency]
        [--models bert,squeezebert,mobilebert,distilbert] [--step-batch 8] [--steps 3] [--questions 24]

"Before" runs from a git worktree of COMMIT, "after" from this tree. Every
measurement runs in a fresh process that imports jaxqa from its tree, with no
persistent compilation cache (every compile is cold). Each family's base
model, random weights, float32 as `jaxqa.train` runs on a CPU without AMX:

- compile: seconds to compile the train step (micro-batch 32, LAMB) at each of
  the six padded lengths of 384-token windows (64, 128, ..., 384), one after
  another in one process, as a run meets them;
- memory: XLA's memory analysis of the train step at 32 x 384 (temporaries,
  arguments, outputs) before, and after with each remat setting, with the
  config's attention dropout (0.1) and with none (the fused kernel);
- step: seconds per train step at --step-batch x 384 tokens, the median of
  --steps after one untimed step;
- latency: the pipeline one real SQuAD dev question at a time in fp32, bf16 and
  int8 (`lib/sides.py`'s `warm_latency`): the seconds its `warm_up()` takes to
  compile every bucket, and its median latency; the sides take the questions in
  turns.

Results: benchmarks/results/encoder_core_<parts>_cpu.json.
"""

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for lib
from lib import inputs, paths, records, same_weights, sides, trees

LENGTHS = (64, 128, 192, 256, 320, 384)
MICRO_BATCH = 32
WEIGHTS = {"bert": "bert-base", "squeezebert": "squeezebert", "mobilebert": "mobilebert", "distilbert": "distilbert"}
AFTER = {"remat": "matmuls"}  # `--remat auto` on a CPU
REMAT_CHOICES = ("none", "attention", "matmuls", "layer")
MEMORY_SETTINGS = [
    {"remat": remat, "attention_dropout": rate}
    for rate in (None, 0.0)
    for remat in ("none", "attention", "matmuls", "layer")
]


# ---------------------------------------------------------------- in the measured process


def train_step(model_type: str, setting: dict | None):
    """(jitted train step, abstract state) of the family's base model as the tree
    on sys.path builds it; `setting` None: the tree before the encoder core."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from jaxqa import models
    from jaxqa.training import optim
    from jaxqa.training.step import TrainState, make_train_step

    fam = models.family(model_type)
    if setting is None:
        model = fam.Model(fam.SIZES["base"])  # type: ignore[attr-defined]  # the tree before: a module per family
        layout = lambda params: params
    else:
        from jaxqa.models.encoder import SpanModel
        from jaxqa.models.execution import Execution

        config = fam.sizes["base"]
        if setting.get("attention_dropout") is not None:
            config = dataclasses.replace(config, **{fam.attention_dropout: setting["attention_dropout"]})
        model = SpanModel(config, execution=Execution(scan=setting.get("scan", True), remat=setting["remat"]))
        layout = lambda params: params
    tx = optim.build("lamb", optim.schedule(1e-3, 10, 1000), 0.01)

    def init(key):
        params = layout(nn.meta.unbox(models.init_params(model, key)))
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(params),
            bad_step=jnp.full((), -1, jnp.int32),
        )

    return jax.jit(make_train_step(model, tx, seed=0), donate_argnums=0), init


def batch_of(batch_size: int, length: int, abstract: bool):
    """`inputs.random_batch` of (1, B, T) tokens and (1, B) labels, or its shapes alone."""
    import jax

    batch = inputs.random_batch(batch_size, length)
    if abstract:
        return {key: jax.ShapeDtypeStruct(value.shape, value.dtype) for key, value in batch.items()}
    return batch


def measure(job: dict) -> dict:
    import jax
    import numpy as np

    step, init = train_step(job["model"], job["setting"])
    if job["part"] in ("compile", "memory"):
        state = jax.eval_shape(init, jax.random.key(0))
        out = {}
        for length in job["lengths"]:
            started = time.perf_counter()
            compiled = step.lower(state, batch_of(MICRO_BATCH, length, abstract=True), {}).compile()
            out[length] = time.perf_counter() - started
        memory = compiled.memory_analysis()
        return {
            "compile_s": out,
            "temp_bytes": memory.temp_size_in_bytes,
            "argument_bytes": memory.argument_size_in_bytes,
            "output_bytes": memory.output_size_in_bytes,
        }
    state = jax.jit(init)(jax.random.key(0))
    batch = batch_of(job["batch"], 384, abstract=False)
    state, metrics = step(state, batch, {})
    jax.block_until_ready(metrics)
    seconds = []
    for _ in range(job["steps"]):
        started = time.perf_counter()
        state, metrics = step(state, batch, {})
        jax.block_until_ready(metrics)
        seconds.append(time.perf_counter() - started)
    return {"step_s": float(np.median(seconds)), "loss": float(metrics["loss"])}


# ---------------------------------------------------------------- the driver


def compile_rows(before: Path, model_types: list[str]) -> list[dict]:
    rows = []
    for model_type in model_types:
        sides = {
            "before": trees.run_job(
                before, __file__, {"part": "compile", "model": model_type, "setting": None, "lengths": LENGTHS}
            ),
            "after": trees.run_job(
                paths.ROOT, __file__, {"part": "compile", "model": model_type, "setting": AFTER, "lengths": LENGTHS}
            ),
        }
        row: dict[str, str | float] = {"part": "compile", "model": model_type}
        for side, got in sides.items():
            row[f"{side}_384_s"] = round(got["compile_s"]["384"], 1)
            got["six"] = sum(got["compile_s"].values())
            row[f"{side}_six_lengths_s"] = round(got["six"], 1)
        row["after/before_six"] = round(sides["after"]["six"] / sides["before"]["six"], 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def memory_rows(before: Path, model_types: list[str]) -> list[dict]:
    rows = []
    for model_type in model_types:
        base = trees.run_job(
            before, __file__, {"part": "memory", "model": model_type, "setting": None, "lengths": [384]}
        )
        rows.append(
            {
                "part": "memory",
                "model": model_type,
                "setting": "before",
                "temp_MiB": base["temp_bytes"] >> 20,
                "argument_MiB": base["argument_bytes"] >> 20,
                "temp/before": 1.0,
            }
        )
        for setting in MEMORY_SETTINGS:
            got = trees.run_job(
                paths.ROOT, __file__, {"part": "memory", "model": model_type, "setting": setting, "lengths": [384]}
            )
            dropout = "config's" if setting["attention_dropout"] is None else setting["attention_dropout"]
            rows.append(
                {
                    "part": "memory",
                    "model": model_type,
                    "setting": f"remat {setting['remat']}, attention dropout {dropout}",
                    "temp_MiB": got["temp_bytes"] >> 20,
                    "argument_MiB": got["argument_bytes"] >> 20,
                    "temp/before": round(got["temp_bytes"] / base["temp_bytes"], 3),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def step_rows(before: Path, model_types: list[str], batch: int, steps: int, remat_models: list[str]) -> list[dict]:
    """Each family before and after; the `remat_models` after with every remat setting too."""
    rows = []
    for model_type in model_types:
        job = {"part": "step", "model": model_type, "batch": batch, "steps": steps}
        old = trees.run_job(before, __file__, {**job, "setting": None})["step_s"]
        remats = REMAT_CHOICES if model_type in remat_models else (AFTER["remat"],)
        for remat in remats:
            new = trees.run_job(paths.ROOT, __file__, {**job, "setting": {"remat": remat}})["step_s"]
            rows.append(
                {
                    "part": "step",
                    "model": model_type,
                    "batch": f"{batch} x 384",
                    "after_remat": remat,
                    "before_s": round(old, 2),
                    "after_s": round(new, 2),
                    "after/before": round(new / old, 3),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def latency_rows(before: Path, model_types: list[str], questions: list[dict], workdir: Path) -> list[dict]:
    rows = []
    for model_type in model_types:
        _, folder = same_weights.folders(WEIGHTS[model_type], workdir)
        # Side names begin with "jaxqa" so that warm_latency reports their warm-up.
        runs = {
            f"jaxqa-{side}-{mode}": (f"jaxqa-{mode}", folder)
            for mode in ("fp32", "bf16", "int8")
            for side in ("before", "after")
        }
        trees = {f"jaxqa-before-{mode}": before for mode in ("fp32", "bf16", "int8")}
        got = {row["side"]: row for row in sides.warm_latency(runs, questions, 2, None, trees)}
        for mode in ("fp32", "bf16", "int8"):
            old, new = got[f"jaxqa-before-{mode}"], got[f"jaxqa-after-{mode}"]
            rows.append(
                {
                    "part": "latency",
                    "model": model_type,
                    "precision": mode,
                    "before_warm_up_s": old["warm_up_s"],
                    "after_warm_up_s": new["warm_up_s"],
                    "before_median_ms": old["median_ms"],
                    "after_median_ms": new["median_ms"],
                    "after/before_latency": round(new["median_ms"] / old["median_ms"], 3),
                    "recompiled_after_warm_up": old["recompiled_after_warm_up"] or new["recompiled_after_warm_up"],
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--job", help=argparse.SUPPRESS)  # one measurement, in a process of its own
    p.add_argument("--before", help="the commit to compare against")
    p.add_argument("--parts", default="compile,memory,step,latency")
    p.add_argument("--models", default="bert,squeezebert,mobilebert,distilbert")
    p.add_argument("--memory-models", default="bert")
    p.add_argument("--remat-models", default="bert", help="families whose step is timed with every remat setting")
    p.add_argument("--step-batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--questions", type=int, default=24)
    p.add_argument("--squad-dir", type=Path, default=paths.SQUAD)
    p.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "jaxqa-bench", help="weights made once and reused"
    )
    args = p.parse_args()
    if args.job:
        print(json.dumps(measure(json.loads(args.job))))
        return
    if not args.before:
        p.error("--before COMMIT is needed")
    before = trees.worktree(args.before)
    model_types = args.models.split(",")
    parts = args.parts.split(",")
    rows = []
    if "compile" in parts:
        rows += compile_rows(before, model_types)
    if "memory" in parts:
        rows += memory_rows(before, args.memory_models.split(","))
    if "step" in parts:
        rows += step_rows(before, model_types, args.step_batch, args.steps, args.remat_models.split(","))
    if "latency" in parts:
        questions = inputs.squad_questions(args.squad_dir / "dev-v1.1.json", args.questions)
        rows += latency_rows(before, model_types, questions, args.workdir)
    records.write(
        {
            "before": args.before,
            "after_setting": AFTER,
            "micro_batch": MICRO_BATCH,
            "lengths": LENGTHS,
            "step_batch": args.step_batch,
            "steps": args.steps,
            "questions": args.questions,
            "parts": parts,
        },
        rows,
        *parts,
    )


if __name__ == "__main__":
    main()
