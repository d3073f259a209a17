"""Compact models run as fast as their FLOPs say: BERT-base pruned at random to
about the shape of the published block-pruned model (80 of its 144 heads and
two thirds of its feed-forward units removed), one question at a time on the
CPU. Sides: jaxqa dense, jaxqa compact, their ONNX and LiteRT exports
(`jaxqa-export`, served by jaxqa's pipeline under ONNX Runtime and the LiteRT
interpreter) and PyTorch dense, all float32, each in a process of its own,
taking the same real dev questions in turns (`lib/sides.py`).

    python benchmarks/cpu/compact_speed.py [--questions 40] [--heads-removed 80] [--units-kept 0.333]
        [--exports onnx,litert] [--variant WORD]

The compact model is made as a pruning run makes it: the removed heads' rows
of the attention output and the removed units' rows of the output kernel are
zeroed in the dense weights (random initialisation, seed 0), and
`compact.compact` takes them out. The FLOP ratio is dense over compact
`forward_flops` summed over the questions' first windows at their padded
lengths (for LiteRT, whose signatures step by 64 tokens, at those); the
target is a speed-up of at least 0.8 times it, for jaxqa and for each export
under its runtime alike.
Results: benchmarks/results/compact_speed_<platform>.json (compact_speed_<WORD>_<platform>.json
with --variant WORD).
"""

import argparse
import sys
from pathlib import Path

import jax
import numpy as np

import jaxqa
from jaxqa import checkpoint
from jaxqa.export import write
from jaxqa.models import bert, compact
from jaxqa.pipeline import PIPELINE_LENGTH_STEP
from jaxqa.squad import buckets

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for lib
from lib import inputs, paths, records, same_weights, sides

MAX_LEN = 384


def pruned_at_random(dense: Path, out: Path, heads_removed: int, units_kept: float, seed: int) -> bert.Config:
    """Writes a compact copy of the dense BERT at `dense` to `out`, with
    `heads_removed` heads and all but `units_kept` of the feed-forward units
    removed, chosen at random over all layers; returns its config."""
    source = checkpoint.open_checkpoint(dense)
    config, params = source.config, jax.tree_util.tree_map(np.array, source.read_params())  # writable copies
    rng = np.random.default_rng(seed)
    layers, heads, width, head_dim = (
        config.num_hidden_layers,
        config.num_attention_heads,
        config.intermediate_size,
        config.head_dim,
    )
    gone_heads = rng.choice(layers * heads, heads_removed, replace=False)
    gone_units = rng.choice(layers * width, layers * width - round(units_kept * layers * width), replace=False)
    for i in range(layers):
        layer = params[f"layer_{i}"]
        for h in gone_heads[gone_heads // heads == i] % heads:
            layer["attention_output"]["kernel"][h * head_dim : (h + 1) * head_dim] = 0
        layer["output"]["kernel"][gone_units[gone_units // width == i] % width] = 0
    config, params = compact.compact(config, params)
    checkpoint.save_pretrained(out, "bert", config, params, dense, overwrite=True)
    return config


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--questions", type=int, default=40)
    p.add_argument("--warm", type=int, default=5, help="questions asked of every side before timing")
    p.add_argument("--heads-removed", type=int, default=80)
    p.add_argument("--units-kept", type=float, default=1 / 3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--squad-dir", type=Path, default=paths.SQUAD)
    p.add_argument("--workdir", type=Path, default=paths.WEIGHTS)
    p.add_argument("--exports", default="onnx,litert", help="export formats to add as sides ('' for none)")
    p.add_argument("--variant", default="", help="a word for the record's name, e.g. the machine (avx2)")
    args = p.parse_args()

    hf_folder, dense = same_weights.folders("bert-base", args.workdir)
    small = same_weights.compact_folder(args.workdir)
    small_config = pruned_at_random(dense, small, args.heads_removed, args.units_kept, args.seed)
    dense_config = checkpoint.open_checkpoint(dense).config
    questions = inputs.squad_questions(args.squad_dir / "dev-v1.1.json", args.questions)
    tokenizer = jaxqa.load_pretrained(small).tokenizer
    lengths = [min(MAX_LEN, len(tokenizer.encode(q["question"], q["context"]).ids)) for q in questions]

    def padded_flops(step: int) -> tuple[np.ndarray, dict[str, int]]:
        """The questions' first windows padded to multiples of `step`, and each model's FLOPs over them."""
        padded = buckets.fit(buckets.widths(MAX_LEN, step), np.asarray(lengths))
        configs = (("dense", dense_config), ("compact", small_config))
        return padded, {name: sum(bert.forward_flops(config, int(n)) for n in padded) for name, config in configs}

    padded, flops = padded_flops(PIPELINE_LENGTH_STEP)
    flop_ratio = flops["dense"] / flops["compact"]
    _, litert_flops = padded_flops(write.DEFAULT_LENGTH_STEP)
    litert_flop_ratio = litert_flops["dense"] / litert_flops["compact"]
    flop_ratio_at_384 = bert.forward_flops(dense_config, MAX_LEN) / bert.forward_flops(small_config, MAX_LEN)

    runs = {
        "jaxqa-dense": ("jaxqa-fp32", dense),
        "jaxqa-compact": ("jaxqa-fp32", small),
        "pytorch-fp32": ("pytorch-fp32", hf_folder),
    }
    for runtime in filter(None, args.exports.split(",")):
        for name, folder in (("dense", dense), ("compact", small)):
            side = f"{runtime}-fp32"
            runs[f"{runtime}-{name}"] = (side, sides.side_folder(side, hf_folder, folder, args.workdir))
    rows = sides.warm_latency(runs, questions, args.warm, None)
    median = {row["side"]: row["median_ms"] for row in rows}
    for row in rows:
        runtime = row["side"].split("-")[0]
        row["speed_up_vs_jaxqa_dense"] = round(median["jaxqa-dense"] / row["median_ms"], 3)
        if runtime in ("onnx", "litert"):
            row[f"speed_up_vs_{runtime}_dense"] = round(median[f"{runtime}-dense"] / row["median_ms"], 3)
        if row["side"].endswith("-compact"):
            ratio = litert_flop_ratio if runtime == "litert" else flop_ratio
            row["flop_ratio"] = round(ratio, 3)
            row["speed_up_over_flop_ratio"] = round(median[f"{runtime}-dense"] / row["median_ms"] / ratio, 3)
            row["target_met"] = row["speed_up_over_flop_ratio"] >= 0.8
    settings = {
        **vars(args),
        "heads_after": [small_config.heads(i) for i in range(small_config.num_hidden_layers)],
        "feed_forward_units_after": [small_config.ffn(i) for i in range(small_config.num_hidden_layers)],
        "median_padded_length": int(np.median(padded)),
        "flops_dense": flops["dense"],
        "flops_compact": flops["compact"],
        "flop_ratio_at_384": round(flop_ratio_at_384, 3),
    }
    records.write(settings, rows, args.variant)


if __name__ == "__main__":
    main()
