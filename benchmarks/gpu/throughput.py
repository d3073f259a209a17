"""jaxqa against Hugging Face `transformers` in PyTorch on one GPU, back to back:
training and inference throughput, model FLOPs utilisation, peak device memory
and the compile time of jaxqa's train step, for BERT, SqueezeBERT and MobileBERT.

    python benchmarks/gpu/throughput.py [--models bert,squeezebert,mobilebert] [--batch-size 64]

Without a GPU it runs end to end as a smoke test (the results file is named
after the platform, e.g. throughput_cpu.json, and records the device):

    python benchmarks/gpu/throughput.py --sizes tiny --steps 2 --batch-size 4

Both sides run the same config (jaxqa's `SIZES[size]`; `base` equals the
`transformers` default config) on one device, with random weights, random token
ids without padding and random start/end labels (speed does not depend on them):
- training: sequence length 384, bfloat16 compute with float32 weights (jaxqa's
  model dtype as `jaxqa.train` picks it on accelerators; `torch.autocast` in
  PyTorch), AdamW (lr 5e-5, eps 1e-6, weight decay 0.01 on kernels and
  embeddings, gradients clipped to norm 1; lib/gpu_recipe.py): jaxqa's own
  train step against `XForQuestionAnswering` in eager PyTorch with fused AdamW
  on CUDA.
  After warm-up steps, the sides take turns for `--rounds` rounds of `--steps`
  timed steps; each rate is the median over rounds, in sequences/s.
- MFU: training FLOP/s over the device's bfloat16 matmul rate, measured in the
  same run on an (n, n) @ (n, n) product (n = 8192 on accelerators, 1024 on
  CPUs), and over the nominal dense bfloat16 peak where the device is known
  (989 TFLOP/s for the H100 and H200). Training FLOPs are 3 x the forward
  matmul FLOPs counted by the family's `forward_flops`; both sides are divided
  by the same count. Batches hold no padding, so real tokens/s = 384 x sequences/s.
- each model runs in a fresh process: its train step is compiled first, with an
  empty persistent compilation cache (cold); then training, then inference.
- peak memory: jaxqa: the device's `peak_bytes_in_use` after training, which
  counts only what jax allocated in that process (parameters, AdamW state,
  batch, activations, XLA's temporaries and autotuning scratch); PyTorch:
  `torch.cuda.max_memory_allocated()`, its tensors in the same process (not the
  allocator's cache). Neither counts the CUDA context. CPUs report none.
- compile: seconds of `jax.jit(step).lower(...).compile()` for the train step,
  cold as above, then warm: in another fresh process (so jax's in-memory cache
  does not count) with the persistent cache the first one filled.
- inference: the jitted forward against `torch.inference_mode()` + autocast,
  batch 128, taking turns as in training.
Results go to benchmarks/results/throughput_<platform>.json, rewritten after each model.
"""

import argparse
import functools
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np

from jaxqa import compilation_cache, models
from jaxqa.models.encoder import SpanModel
from jaxqa.models.execution import REMAT, Execution

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for lib
from lib import inputs, records, timing, train_steps
from lib.gpu_recipe import ADAM_EPS, CLIP_NORM, LEARNING_RATE, WEIGHT_DECAY, config_of, jaxqa_model, jaxqa_train_step

GIB = 2**30


# ---------------------------------------------------------------- the two sides


def random_batch(batch_size: int, seq_len: int) -> dict[str, np.ndarray]:
    """Token ids, mask and types (B, T) and start/end labels (B,), int32; no padding."""
    return inputs.random_batch(batch_size, seq_len, (1000, 30000), micro_batches=None)


def execution_of(args: argparse.Namespace) -> Execution:
    return Execution(scan=not args.unrolled, remat=args.remat)


def jaxqa_train(model: nn.Module, batch: dict[str, np.ndarray]) -> tuple[Callable[[int], None], float]:
    """A function that runs n train steps on `batch` and waits for them, and the
    seconds it took to trace, lower and compile the step."""
    tx, step = jaxqa_train_step(model)
    state = train_steps.train_state(model, tx)
    batch = jax.device_put({key: value[None] for key, value in batch.items()})  # (1, B, ...): one micro-batch
    started = time.perf_counter()
    step = step.lower(state, batch, {}).compile()
    compile_seconds = time.perf_counter() - started

    def run(n: int) -> None:
        nonlocal state
        for _ in range(n):
            state, metrics = step(state, batch, {})
        jax.block_until_ready(metrics)

    return run, compile_seconds


def jaxqa_infer(model: SpanModel, batch: dict[str, np.ndarray]) -> Callable[[int], None]:
    """A function that runs n forward passes on `batch` and waits for them."""
    params = train_steps.random_params(model)
    forward = jax.jit(lambda params, ids, mask, types: model.apply({"params": params}, ids, mask, types))
    ids, mask, types = jax.device_put((batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]))

    def run(n: int) -> None:
        for _ in range(n):
            logits = forward(params, ids, mask, types)
        jax.block_until_ready(logits)

    return run


def jaxqa_peak_bytes() -> int | None:
    stats = jax.devices()[0].memory_stats()
    return stats.get("peak_bytes_in_use") if stats else None


def pytorch_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def pytorch_model(model_type: str, size: str, attention_dropout: float | None):
    """`XForQuestionAnswering` of the same config, float32 weights on the device."""
    import transformers

    config = transformers.AutoConfig.for_model(**config_of(model_type, size, attention_dropout).to_hf())
    return transformers.AutoModelForQuestionAnswering.from_config(config).to(pytorch_device())


def pytorch_sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def pytorch_train(model, batch: dict[str, np.ndarray]) -> Callable[[int], None]:
    """A function that runs n train steps of `model` on `batch` and waits for them."""
    import torch

    device = pytorch_device()
    model.train()
    # Decay on kernels and embeddings only, as `jaxqa.training.optim.decay_mask`; fused AdamW where there is CUDA.
    groups = [
        {"params": [p for p in model.parameters() if p.ndim > 1], "weight_decay": WEIGHT_DECAY},
        {"params": [p for p in model.parameters() if p.ndim <= 1], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=LEARNING_RATE, eps=ADAM_EPS, fused=device == "cuda")
    inputs = {key: torch.as_tensor(value, dtype=torch.long, device=device) for key, value in batch.items()}

    def run(n: int) -> None:
        for _ in range(n):
            with torch.autocast(device, dtype=torch.bfloat16):
                loss = model(**inputs).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP_NORM)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        pytorch_sync()

    return run


def pytorch_infer(model, batch: dict[str, np.ndarray]) -> Callable[[int], None]:
    """A function that runs n forward passes of `model` on `batch` and waits for them."""
    import torch

    device = pytorch_device()
    model.eval()
    inputs = {
        key: torch.as_tensor(batch[key], dtype=torch.long, device=device)
        for key in ("input_ids", "attention_mask", "token_type_ids")
    }

    def run(n: int) -> None:
        with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16):
            for _ in range(n):
                model(**inputs)
        pytorch_sync()

    return run


def pytorch_peak_bytes() -> int | None:
    import torch

    return torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None


# ---------------------------------------------------------------- measurements


def take_turns(
    runners: dict[str, Callable[[int], None]], batch_size: int, warmup: int, steps: int, rounds: int
) -> dict[str, float]:
    """Median sequences/s of each runner over `rounds` rounds of `steps` steps, the
    runners taking turns within each round, after `warmup` steps each."""
    for run in runners.values():
        run(warmup)
    seconds, _ = timing.in_turns({name: functools.partial(run, steps) for name, run in runners.items()}, rounds)
    return {name: statistics.median(batch_size * steps / took for took in values) for name, values in seconds.items()}


def worker(model_type: str, size: str, args: argparse.Namespace, cache_dir: str) -> dict:
    """In a fresh process: the train step's cold compile (with `cache_dir`, empty, as the
    persistent cache), both sides' training rates and peak memory, then their
    inference rates, and PyTorch's attention implementation (sdpa, eager)."""
    compilation_cache.enable(cache_dir)
    turns = (args.warmup, args.steps, args.rounds)
    theirs = pytorch_model(model_type, size, args.attention_dropout)
    batch = random_batch(args.batch_size, args.seq_len)
    jaxqa_run, compile_seconds = jaxqa_train(
        jaxqa_model(model_type, size, execution_of(args), args.attention_dropout), batch
    )
    train = take_turns({"jaxqa": jaxqa_run, "pytorch": pytorch_train(theirs, batch)}, args.batch_size, *turns)
    row = {
        "train": train,
        "compile_cold_s": compile_seconds,
        "jaxqa_peak_bytes": jaxqa_peak_bytes(),
        "pytorch_peak_bytes": pytorch_peak_bytes(),
        "pytorch_attention": theirs.config._attn_implementation,
    }
    del jaxqa_run  # the train state, before the inference programs allocate
    batch = random_batch(args.infer_batch_size, args.seq_len)
    row["infer"] = take_turns(
        {
            "jaxqa": jaxqa_infer(jaxqa_model(model_type, size, execution_of(args), args.attention_dropout), batch),
            "pytorch": pytorch_infer(theirs, batch),
        },
        args.infer_batch_size,
        *turns,
    )
    return row


def compile_worker(model_type: str, size: str, args: argparse.Namespace, cache_dir: str) -> float:
    """Seconds to trace, lower and compile the train step with `cache_dir` as the
    persistent compilation cache, in a fresh process; nothing is allocated."""
    compilation_cache.enable(cache_dir)
    model = jaxqa_model(model_type, size, execution_of(args), args.attention_dropout)
    tx, step = jaxqa_train_step(model)
    state = jax.eval_shape(functools.partial(train_steps.train_state, model, tx))
    batch = {key: value[None] for key, value in random_batch(args.batch_size, args.seq_len).items()}
    started = time.perf_counter()
    step.lower(state, batch, {}).compile()
    return time.perf_counter() - started


def in_fresh_process(fn: Callable, *args):
    """fn(*args) in a new Python process, with its own jax runtime, memory statistics and caches."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def measure(model_type: str, size: str, args: argparse.Namespace, matmul_rate: float, peak_rate: float | None) -> dict:
    """One row: both sides' training and inference rates, MFU and peak memory, and the compile times."""
    cache_dir = tempfile.mkdtemp(prefix="jaxqa-compile-cache-")
    try:
        found = in_fresh_process(worker, model_type, size, args, cache_dir)
        warm = in_fresh_process(compile_worker, model_type, size, args, cache_dir)
    finally:
        shutil.rmtree(cache_dir)
    train, infer = found["train"], found["infer"]
    fam = models.family(model_type)
    train_flops = 3 * fam.forward_flops(fam.sizes[size], args.seq_len)  # per sequence
    gib = lambda n: None if n is None else round(n / GIB, 2)
    mfu = lambda rate, scale: None if scale is None else round(rate * train_flops / scale, 4)
    return {
        "model": model_type,
        "size": size,
        "train_gflop_per_seq": round(train_flops / 1e9, 2),
        "jaxqa_train_seq_s": round(train["jaxqa"], 2),
        "pytorch_train_seq_s": round(train["pytorch"], 2),
        "train_ratio": round(train["jaxqa"] / train["pytorch"], 3),
        "jaxqa_train_tokens_s": round(train["jaxqa"] * args.seq_len),
        "jaxqa_mfu": mfu(train["jaxqa"], matmul_rate),
        "pytorch_mfu": mfu(train["pytorch"], matmul_rate),
        "jaxqa_mfu_of_peak": mfu(train["jaxqa"], peak_rate),
        "pytorch_mfu_of_peak": mfu(train["pytorch"], peak_rate),
        "jaxqa_peak_gib": gib(found["jaxqa_peak_bytes"]),
        "pytorch_peak_gib": gib(found["pytorch_peak_bytes"]),
        "jaxqa_infer_seq_s": round(infer["jaxqa"], 2),
        "pytorch_infer_seq_s": round(infer["pytorch"], 2),
        "infer_ratio": round(infer["jaxqa"] / infer["pytorch"], 3),
        "compile_cold_s": round(found["compile_cold_s"], 2),
        "compile_warm_s": round(warm, 2),
        "pytorch_attention": found["pytorch_attention"],
    }


# Dense bfloat16 tensor-core peaks, FLOP/s, by a word of the device's name.
NOMINAL_PEAKS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(models.MODEL_TYPES), help="comma-separated model types")
    p.add_argument("--sizes", default="base", help="comma-separated names of each family's SIZES")
    p.add_argument("--batch-size", type=int, default=64, help="training batch, both sides")
    p.add_argument("--infer-batch-size", type=int, default=128, help="inference batch, both sides")
    p.add_argument("--seq-len", type=int, default=384)
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per side before the first round")
    p.add_argument("--steps", type=int, default=20, help="timed steps per side and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--remat", default="attention", choices=REMAT, help="what jaxqa's backward pass recomputes")
    p.add_argument(
        "--attention-dropout",
        type=float,
        default=None,
        help="attention's dropout rate on both sides (default: the config's); 0: jaxqa's fused kernel",
    )
    p.add_argument("--unrolled", action="store_true", help="jaxqa's layers unrolled, not scanned")
    p.add_argument(
        "--matmul-size",
        type=int,
        default=None,
        help="n of the matmul that sets the MFU scale (default 8192 on accelerators, 1024 on CPUs)",
    )
    args = p.parse_args()
    pairs = [(model_type, size) for model_type in args.models.split(",") for size in args.sizes.split(",")]
    for model_type, size in pairs:
        if model_type not in models.MODEL_TYPES or size not in models.family(model_type).sizes:
            p.error(
                f"no {model_type!r} of size {size!r}: models are {', '.join(models.MODEL_TYPES)}, "
                "sizes the names in each family's SIZES"
            )
    # jax would take 75% of GPU memory at start-up; PyTorch shares the device, and
    # peak memory should be what each side asks for. Children inherit this.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

    device = jax.devices()[0]
    matmul_size = args.matmul_size or (1024 if device.platform == "cpu" else 8192)
    matmul_rate = timing.matmul_flops_per_s(matmul_size)
    peak_rate = next((rate for word, rate in NOMINAL_PEAKS.items() if word in device.device_kind), None)
    print(f"bfloat16 matmul {matmul_size}^3: {matmul_rate / 1e12:.3g} TFLOP/s", flush=True)
    settings = {
        "seq_len": args.seq_len,
        "batch_size": args.batch_size,
        "infer_batch_size": args.infer_batch_size,
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "rounds": args.rounds,
        "precision": "bfloat16 compute, float32 weights",
        "optimizer": f"AdamW lr {LEARNING_RATE} eps {ADAM_EPS} weight decay {WEIGHT_DECAY} clip {CLIP_NORM}",
        "remat": args.remat,
        "attention_dropout": args.attention_dropout,
        "layers": "unrolled" if args.unrolled else "scanned",
        "matmul_size": matmul_size,
        "matmul_tflop_s": round(matmul_rate / 1e12, 2),
        "nominal_peak_tflop_s": peak_rate and peak_rate / 1e12,
        "train_flops": "3 x the family's forward_flops (jaxqa.models)",
        "mfu": "training FLOP/s over the measured matmul rate; _of_peak: over the nominal peak",
        "rates": "sequences/s, median over rounds",
        "peak": "training, GiB; see the module docstring",
    }
    rows = []
    for model_type, size in pairs:  # the record is rewritten after each row, so a cut-short run keeps its rows
        rows.append(measure(model_type, size, args, matmul_rate, peak_rate))
        records.write(settings, rows)


if __name__ == "__main__":
    main()
