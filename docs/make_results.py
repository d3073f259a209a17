"""Writes docs/results.md, its plots (docs/*.png) and README.md's headline table
from the records in benchmarks/results/, so that no number on those pages is
typed by hand.

    python docs/make_results.py          # rewrite the page, the plots and the headline
    python docs/make_results.py --check  # exit 1 if the page or the headline differ from the records

Each record (benchmarks/lib/records.py's `write`), named after the script that
wrote it (benchmarks/README.md), holds the command that made it,
the machine, the versions and the commit; the page shows them above its rows.
Records of another form (the older fine-tuning records, a log) are shown as
they are, with where they came from. The plots need matplotlib.
"""

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ROOT / "benchmarks" / "results"
PAGE = ROOT / "docs" / "results.md"
README = ROOT / "README.md"
HEADLINE = ("<!-- results:headline:begin -->", "<!-- results:headline:end -->")
# Fields of a record that say where it came from; the rest are its settings and rows.
ORIGIN = ("command", "commit", "device", "platform", "host", "cpu_flags", "versions", "settings", "rows")

# The load test of the service, benchmarks/cpu/serve.py: a section that joins
# SECTIONS, after "Speed against PyTorch on a CPU", once its record serve_cpu exists.
SERVING = (
    "Serving under load",
    "jaxqa serve (float32, its fastest mode that keeps the answers, and float32 with batching off) against a "
    "FastAPI server around the transformers pipeline answering one request at a time, each a process of its own "
    "on the same weights and real SQuAD dev questions: closed loops of rising concurrency, then Poisson arrivals "
    "at rising rates (shares of each side's capacity) against a p99 bound; batch sizes from the server's metrics, "
    "its CPU share, and agreement with transformers' answers.",
    ["serve_cpu"],
)
# The page's sections: a title, what the records measure, and the records in order.
SECTIONS = [
    (
        "The encoder core: compile, memory, step time and latency before and after",
        "Scanned layers, rematerialisation and fused attention against the code before them (a git worktree), "
        "side by side in one run: train-step compile per padded length, XLA's memory analysis of BERT-base's step, "
        "step time, and the pipeline's warm-up and one-question latency per precision; then the pipeline's forward run "
        "layer by layer over each layer's own weights against the scanned one: the weight copies in the compiled "
        "programs, warm-up and latency against PyTorch.",
        [
            "encoder_core_compile_memory_cpu",
            "encoder_core_memory_step_cpu",
            "encoder_core_step_cpu",
            "encoder_core_latency_cpu",
            "layer_copy_cpu",
        ],
    ),
    (
        "Speed against PyTorch on a CPU",
        "One question at a time through the pipelines (jaxqa's and transformers'), each side in its own process, "
        "taking the questions in turns; agreement counts answers equal to PyTorch float32's.",
        [
            "latency_cpu",
            "batch_speed_100q_cpu",
            "pipeline_profile_cpu",
            "buckets_cpu",
            "featurize_cpu",
            "matmul_cpu",
        ],
    ),
    (
        "Every runtime and precision, and `auto`",
        "BERT-base, the real MiniLM with a seeded span head (near-flat logits: a harsh test of a precision) and the "
        "fine-tuned MiniLM, one question at a time as above: jaxqa's XLA modes, its ONNX and LiteRT exports, "
        "`runtime` auto over the checkpoint with those exports beside it, its measurement made in its start-up "
        "(`runs` names what each side runs, auto's choice included), and PyTorch's modes, in one run.",
        ["latency_cpuinference_cpu"],
    ),
    SERVING,
    (
        "Exports: ONNX and LiteRT",
        "jaxqa-export's ONNX and LiteRT models (float32, int8) served by jaxqa's pipeline under ONNX Runtime and the "
        "LiteRT interpreter, against jaxqa's own modes, PyTorch, and ONNX Runtime over torch.onnx.export of the same "
        "weights (torchonnx), one question at a time as above, on an Intel Xeon with AMX and on an AMD EPYC with "
        "AVX2 only (the records with avx2 in their names); jaxqa's modes with XLA's oneDNN flag; a compact BERT-base "
        "exported at its compact shape; the exports' sizes on disk.",
        [
            "latency_export_cpu",
            "latency_export_avx2_cpu",
            "latency_onednn_cpu",
            "compact_speed_export_cpu",
            "compact_speed_export_avx2_cpu",
            "export_sizes_cpu",
        ],
    ),
    (
        "Precision",
        "Accuracy and speed of the matrix products in float32, bfloat16 and int8, and of the exports, on 1,000 "
        "dev questions with the fine-tuned MiniLM, on the AMX machine and on the AVX2 one; then which int8 keeps "
        "float32's answers: each variant's share of answers equal to float32's, with the fine-tuned MiniLM (1,000 "
        "dev questions) and the seeded-head MiniLM (300), variants jaxqa does not ship included.",
        ["precision_eval_cpu", "precision_eval_avx2_cpu", "int8_variants_cpu", "int8_variants_groups_cpu"],
    ),
    (
        "Learning on a CPU",
        "The real MiniLM fine-tuned on slices of SQuAD 1.1 with jaxqa.train, a student distilled from it, and "
        "its pruning to a compact model.",
        [
            "finetune_minilm_800q_cpu",
            "finetune_minilm_800q_seed1_cpu",
            "finetune_minilm_800q_padded_cpu",
            "finetune_minilm_800q_padded_seed1_cpu",
            "finetune_minilm_2000q_cpu",
            "distill_minilm_cpu",
            "prune_minilm_cpu",
            "prune_minilm_per_kernel_penalty_cpu",
        ],
    ),
    (
        "Length-aware batches",
        "Training and evaluation on real tokens against padding to the full window.",
        ["length_speed_cpu", "train_speed_cpu"],
    ),
    (
        "Compact models and pruning's cost",
        "A BERT-base pruned at random to the published block-pruned shape, against the dense one; what each "
        "pruning method adds to a train step.",
        ["compact_speed_cpu", "prune_step_cpu", "prune_step_sorting_cpu", "distill_step_cpu"],
    ),
    ("Conversion", "PyTorch checkpoints converted, and the largest difference of their logits.", ["conversion_cpu"]),
    (
        "On a GPU",
        "The one GPU run so far, of older code.",
        ["throughput_h100_9b0ea2a_gpu", "step_profile_h100_398a257_gpu"],
    ),
]
# The plots: what each shows, and the records it draws, in whose section it appears.
PLOTS = {
    "latency.png": ("One question at a time, per model and runtime", ["latency_cpu"]),
    "pruning.png": (
        "F1 against the FLOP ratio of the pruned MiniLM",
        ["prune_minilm_cpu", "prune_minilm_per_kernel_penalty_cpu"],
    ),
    "length_batches.png": ("Training throughput, padded against length-grouped", ["length_speed_cpu"]),
    "encoder_core.png": ("Pipeline warm-up before and after the encoder core", ["encoder_core_latency_cpu"]),
    "serve.png": ("Served questions/s against clients, and p99 latency against the offered rate", ["serve_cpu"]),
}
# A plot is drawn and shown once the records it draws are on the page.
LISTED = {name for _, _, names in SECTIONS for name in names}
PLOTS = {plot: entry for plot, entry in PLOTS.items() if set(entry[1]) <= LISTED}


def caption(plot: str) -> str:
    """What a plot shows, and the files of the records it draws."""
    what, drawn = PLOTS[plot]
    return f"{what} ({', '.join(name + '.json' for name in drawn)})"


def records() -> dict[str, dict]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(RECORDS.glob("*.json"))}


def _cell(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{key} {_cell(item)}" for key, item in value.items())
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, list):
        return ", ".join(map(_cell, value))
    return "" if value is None else str(value).replace("|", "\\|")


def table(rows: list[dict]) -> list[str]:
    """A Markdown table of rows (dicts), its columns the keys in order of first appearance."""
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(_cell(row.get(key)) for key in columns) + " |" for row in rows]


def origin(record: dict) -> list[str]:
    """Where a record came from: command, machine, versions, commit."""
    machine = record.get("host") or record.get("device", "not recorded")
    if record.get("cpu_flags"):
        machine += f" ({', '.join(record['cpu_flags'])})"
    lines = [f"- command: `{record.get('command', 'not recorded').strip()}`", f"- machine: {machine}"]
    if record.get("device") and record.get("host"):
        lines.append(f"- device: {record['device']}")
    if record.get("versions"):
        lines.append("- versions: " + ", ".join(f"{k} {v}" for k, v in record["versions"].items()))
    lines.append(f"- commit: {record.get('commit', 'not recorded')}")
    if record.get("settings"):
        lines.append(f"- settings: {_cell(record['settings'])}")
    return lines


def section(name: str, record: dict) -> list[str]:
    rows = record.get("rows")
    if rows is None:  # an older record: its fields are its one row
        rows = [{key: value for key, value in record.items() if key not in ORIGIN}]
    return [f"### {name}", "", *origin(record), "", *table(rows), ""]


def page(found: dict[str, dict]) -> str:
    lines = [
        "# Results",
        "",
        "Generated by `python docs/make_results.py` from the records in `benchmarks/results/`; a test fails when",
        "this page differs from them. Each record names the command that made it, the machine, the versions and",
        "the commit. Compare figures within one record only: each was measured in one run on one machine, and",
        "the machines differ between records.",
        "",
        *(f"- [{title}](#{_anchor(title)})" for title, _, _ in SECTIONS),
        "",
    ]
    listed = {name for _, _, names in SECTIONS for name in names}
    for title, what, names in SECTIONS:
        lines += [f"## {title}", "", what, ""]
        for plot, (_, drawn) in PLOTS.items():
            if set(drawn) & set(names):
                lines += [f"![{caption(plot)}]({plot})", ""]
        for name in names:
            lines += section(name, found[name])
    unlisted = sorted(set(found) - listed)
    if unlisted:
        lines += ["## Other records", ""]
        for name in unlisted:
            lines += section(name, found[name])
    logs = sorted(path.name for path in RECORDS.glob("*.log"))
    if logs:
        lines += ["## Logs kept as they are", ""]
        lines += [
            f"- [`{name}`](../benchmarks/results/{name}): the output of a run that wrote no record" for name in logs
        ]
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def _anchor(title: str) -> str:
    return "".join(c for c in title.lower().replace(" ", "-") if c.isalnum() or c == "-")


def headline(found: dict[str, dict]) -> str:
    """README's table: one line per thing a user weighs, each from its record."""
    quick = found["finetune_minilm_800q_cpu"]
    latency = {(r["model"], r["side"]): r for r in found["latency_cpuinference_cpu"]["rows"]}
    compact = next(r for r in found["prune_minilm_cpu"]["rows"] if r["model"] == "compact")
    length = found["length_speed_cpu"]["rows"][1]
    core = {(r["model"], r["precision"]): r for r in found["encoder_core_latency_cpu"]["rows"]}
    bert, auto = latency[("bert-base", "jaxqa-fp32")], latency[("bert-base", "jaxqa-auto")]
    tuned = {side: row for (model, side), row in latency.items() if model.startswith("finetuned")}
    exports = {(r["model"], r["side"]): r for r in found["latency_export_avx2_cpu"]["rows"]}
    minilm = {side: row for (model, side), row in exports.items() if model.startswith("finetuned")}
    export, torch_int8 = minilm["litert-fp32"], minilm["pytorch-int8"]
    shrunk = {r["side"]: r for r in found["compact_speed_export_avx2_cpu"]["rows"]}
    onnx_compact, litert_compact = shrunk["onnx-compact"], shrunk["litert-compact"]
    rows = [
        (
            "Fine-tune the real MiniLM on 800 SQuAD questions, 2 CPU cores",
            f"dev F1 {quick['before']['f1']:.1f} → {quick['after']['f1']:.1f} in "
            f"{quick['train_wall_minutes_incl_eval']} min",
            "finetune_minilm_800q_cpu",
        ),
        (
            "BERT-base, one question at a time, float32, CPU",
            f"{bert['median_ms']:.0f} ms, {bert['vs_pytorch_fp32']}x PyTorch float32 "
            f"({bert['agree_with_pytorch_fp32']} answers alike)",
            "latency_cpuinference_cpu",
        ),
        (
            "The fine-tuned MiniLM exported to LiteRT, int8, one question at a time, CPU",
            f"{tuned['litert-int8']['median_ms']:.1f} ms, {tuned['litert-int8']['vs_fastest_pytorch']}x PyTorch's "
            f"fastest mode, int8 ({tuned['litert-int8']['agree_with_pytorch_fp32']} answers alike with PyTorch float32, "
            f"int8 {tuned['pytorch-int8']['agree_with_pytorch_fp32']})",
            "latency_cpuinference_cpu",
        ),
        (
            "BERT-base with its exports beside it, runtime auto, one question at a time, CPU",
            f"chose {auto['runs']}: {auto['median_ms']:.0f} ms, {auto['vs_fastest_pytorch']}x PyTorch's fastest mode "
            f"({auto['agree_with_pytorch_fp32']} answers alike with PyTorch float32, PyTorch int8 "
            f"{latency[('bert-base', 'pytorch-int8')]['agree_with_pytorch_fp32']})",
            "latency_cpuinference_cpu",
        ),
        (
            "The fine-tuned MiniLM exported to LiteRT, float32, one question at a time (AVX2)",
            f"{export['median_ms']:.0f} ms, {export['vs_fastest_pytorch']}x PyTorch's fastest mode, int8 "
            f"({export['agree_with_pytorch_fp32']} answers alike with PyTorch float32, int8 "
            f"{torch_int8['agree_with_pytorch_fp32']})",
            "latency_export_avx2_cpu",
        ),
        (
            "A compact BERT-base exported, against the dense export, one question at a time (AVX2)",
            f"ONNX {onnx_compact['speed_up_vs_onnx_dense']}x faster, LiteRT "
            f"{litert_compact['speed_up_vs_litert_dense']}x, for a FLOP ratio of {onnx_compact['flop_ratio']}",
            "compact_speed_export_avx2_cpu",
        ),
        (
            "MiniLM pruned to half its encoder weights (hybrid)",
            f"F1 {compact['f1']:.1f}, {compact['speed_up']}x faster at a FLOP ratio of {compact['flop_ratio']}",
            "prune_minilm_cpu",
        ),
        (
            "Training on length-grouped batches against padded ones",
            f"{length['speedup']}x the real tokens per second",
            "length_speed_cpu",
        ),
        (
            "MobileBERT pipeline warm-up, int8, scanned layers against unrolled",
            f"{core[('mobilebert', 'int8')]['before_warm_up_s']:.0f} s → "
            f"{core[('mobilebert', 'int8')]['after_warm_up_s']:.0f} s",
            "encoder_core_latency_cpu",
        ),
    ]
    lines = ["| what | result | record |", "|---|---|---|"]
    lines += [f"| {what} | {result} | [{name}](docs/results.md) |" for what, result, name in rows]
    return "\n".join(lines)


def with_headline(readme: str, found: dict[str, dict]) -> str:
    """README.md's text with the headline table between its markers."""
    begin, end = (readme.index(marker) for marker in HEADLINE)
    return readme[: begin + len(HEADLINE[0])] + "\n" + headline(found) + "\n" + readme[end:]


def draw(found: dict[str, dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(ROOT / "docs" / name, dpi=90, metadata={"Software": None})  # the same bytes each time
        plt.close(fig)

    rows = [r for r in found["latency_cpu"]["rows"] if "median_ms" in r]  # not the first-question rows
    model_names = list(dict.fromkeys(r["model"] for r in rows))
    sides = list(dict.fromkeys(r["side"] for r in rows))
    fig, ax = plt.subplots(figsize=(9, 3.8))
    width = 0.8 / len(sides)
    for k, side in enumerate(sides):
        got = {r["model"]: r["median_ms"] for r in rows if r["side"] == side}
        ax.bar(
            [i + k * width for i in range(len(model_names))], [got.get(m, 0) for m in model_names], width, label=side
        )
    labels = ["fine-tuned MiniLM" if name.startswith("finetuned") else name for name in model_names]
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(model_names))], labels)
    ax.set(ylabel="median ms per question", yscale="log", title=caption("latency.png"))
    ax.legend(fontsize=7, ncol=3)
    save(fig, "latency.png")

    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for name, label in (("prune_minilm_cpu", "hybrid"), ("prune_minilm_per_kernel_penalty_cpu", "per-kernel penalty")):
        model_rows = {r["model"]: r for r in found[name]["rows"] if "gflops_per_sequence" in r}
        dense, pruned = model_rows["dense"], model_rows["compact"]
        ratio = dense["gflops_per_sequence"] / pruned["gflops_per_sequence"]
        ax.scatter(ratio, pruned["f1"])
        ax.annotate(
            f"{label}: {dense['median_ms'] / pruned['median_ms']:.2f}x faster", (ratio, pruned["f1"]), fontsize=7
        )
    dense = next(r for r in found["prune_minilm_cpu"]["rows"] if r["model"] == "dense")
    ax.scatter(1.0, dense["f1"], color="black")
    ax.annotate("dense", (1.0, dense["f1"]), fontsize=7)
    ax.set(xlabel="FLOP ratio to dense", ylabel="dev F1", title="Pruning the fine-tuned MiniLM")
    save(fig, "pruning.png")

    rows = [r for r in found["length_speed_cpu"]["rows"] if "training" in r]
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    ax.barh([r["training"] for r in rows], [r["real_tokens_per_s"] for r in rows])
    ax.set(xlabel="real tokens per second", title="Training MiniLM on a CPU")
    save(fig, "length_batches.png")

    rows = found["encoder_core_latency_cpu"]["rows"]
    labels = [f"{r['model']} {r['precision']}" for r in rows]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.bar([i - 0.2 for i in range(len(rows))], [r["before_warm_up_s"] for r in rows], 0.4, label="unrolled (before)")
    ax.bar([i + 0.2 for i in range(len(rows))], [r["after_warm_up_s"] for r in rows], 0.4, label="scanned (after)")
    ax.set_xticks(range(len(rows)), labels, rotation=60, fontsize=7)
    ax.set(ylabel="pipeline warm-up, s", title="Compiling every bucket")
    ax.legend()
    save(fig, "encoder_core.png")

    if "serve.png" in PLOTS:
        rows = found["serve_cpu"]["rows"]
        model_names = list(dict.fromkeys(r["model"] for r in rows))
        fig, axes = plt.subplots(len(model_names), 2, figsize=(10, 3.4 * len(model_names)), squeeze=False)
        for (closed, rated), model in zip(axes, model_names):
            mine = [r for r in rows if r["model"] == model]
            label = "fine-tuned MiniLM" if model.startswith("finetuned") else model
            for side in dict.fromkeys(r["side"] for r in mine):
                loads = [r for r in mine if r["side"] == side and r["load"] == "closed"]
                closed.plot([r["clients"] for r in loads], [r["qps"] for r in loads], "o-", label=side)
                loads = [r for r in mine if r["side"] == side and r["load"] == "open" and r["p99_ms"] is not None]
                rated.plot([r["offered_qps"] for r in loads], [r["p99_ms"] for r in loads], "o-", label=side)
            bound = next(r["p99_bound_ms"] for r in mine if r["load"] == "summary")
            rated.axhline(bound, color="black", linestyle=":", label=f"p99 bound, {bound:g} ms")
            clients = sorted({r["clients"] for r in mine if r["load"] == "closed"})
            closed.set(xscale="log", xlabel="concurrent clients", ylabel="questions/s", title=f"{label}: closed loop")
            closed.set_xticks(clients, [str(n) for n in clients], minor=False)
            closed.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            rated.set(yscale="log", xlabel="offered questions/s", ylabel="p99 ms", title=f"{label}: Poisson arrivals")
            closed.legend(fontsize=7)
            rated.legend(fontsize=7)
        save(fig, "serve.png")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="only compare: exit 1 if a page differs from the records")
    args = p.parse_args(argv)
    found = records()
    want = {PAGE: page(found), README: with_headline(README.read_text(), found)}
    if args.check:
        stale = [str(path.relative_to(ROOT)) for path, text in want.items() if path.read_text() != text]
        if stale:
            print(f"out of date with benchmarks/results/: {', '.join(stale)}; run python docs/make_results.py")
        return 1 if stale else 0
    for path, text in want.items():
        path.write_text(text)
    draw(found)
    print(f"wrote {PAGE.relative_to(ROOT)}, its plots and README.md's headline table")
    return 0


if __name__ == "__main__":
    sys.exit(main())
