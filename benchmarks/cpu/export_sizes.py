"""Size on disk of every export: each model written by `jaxqa-export` in each
format and precision, against the PyTorch checkpoint of the same weights.

    python benchmarks/cpu/export_sizes.py [--models bert-base,mobilebert,squeezebert,distilbert]
        [--finetuned runs/minilm-cpu/train/model] [--compact]

Per model and export: the model file's MiB, its ratio to the float32 export of
the same format and to the `transformers` checkpoint (model.safetensors), and
the seconds the export took. LiteRT exports hold their default signatures
(windows of 64, 128, ..., 384 tokens) in one file. `--compact` adds the
compact BERT-base that `cpu/compact_speed.py` writes (pruned at random to the
published block-pruned shape), whose dense twin is bert-base.
Results: benchmarks/results/export_sizes_cpu.json.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

from jaxqa.export import write

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for lib
from lib import paths, records, same_weights

FORMATS = ("onnx", "litert")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="bert-base,mobilebert,squeezebert,distilbert", help="of lib/same_weights.py")
    p.add_argument("--finetuned", type=Path, default=None, help="a jaxqa checkpoint of one's own to add")
    p.add_argument("--compact", action="store_true", help="add cpu/compact_speed.py's compact BERT-base")
    p.add_argument("--workdir", type=Path, default=paths.WEIGHTS)
    args = p.parse_args()
    models = [(name, *same_weights.folders(name, args.workdir)) for name in filter(None, args.models.split(","))]
    if args.finetuned:
        models.append((f"finetuned {args.finetuned}", *same_weights.exported(args.finetuned, args.workdir)))
    if args.compact:
        small = same_weights.compact_folder(args.workdir)
        if not small.is_dir():
            p.error(f"--compact: {small} is missing; run benchmarks/cpu/compact_speed.py first")
        models.append(("bert-base compact", same_weights.folders("bert-base", args.workdir)[0], small))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, hf_folder, ours in models:
            pytorch_mib = (hf_folder / "model.safetensors").stat().st_size / 2**20
            for fmt in FORMATS:
                fp32_mib = None
                for precision in write.PRECISIONS:
                    started = time.perf_counter()
                    out = write.export(ours, Path(tmp) / f"{fmt}-{precision}", fmt, precision, overwrite=True)
                    seconds = time.perf_counter() - started
                    mib = (out / write.MODEL_FILES[fmt]).stat().st_size / 2**20
                    fp32_mib = fp32_mib or mib
                    rows.append(
                        {
                            "model": name,
                            "export": f"{fmt}-{precision}",
                            "mib": round(mib, 1),
                            "vs_fp32_export": round(mib / fp32_mib, 3),
                            "vs_pytorch_checkpoint": round(mib / pytorch_mib, 3),
                            "export_s": round(seconds, 1),
                        }
                    )
                    print(rows[-1], flush=True)
    records.write({**vars(args), "formats": FORMATS, "precisions": write.PRECISIONS}, rows)


if __name__ == "__main__":
    main()
