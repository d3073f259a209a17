#!/usr/bin/env bash
# The GPU runs in one command, on a machine with no network whose Python holds
# jax, torch and transformers but not jaxqa's reference transformers 5.2.0 (the
# last with SqueezeBERT and MobileBERT) nor `datasets`. Beforehand, on a machine
# with the packages and the data:
#   python benchmarks/gpu/pack.py        # .devdata/: MiniLM in float16 and SQuAD 1.1, xz
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#       -d .whl transformers==5.2.0 tokenizers==0.22.2
# then, from the repository root there (results and logs go to $OUT, or benchmarks/results/gpu/):
#   JAXQA_COMMIT=<commit> bash benchmarks/gpu/run.sh [MINILM_SECONDS] [TRAIN_SECONDS]
# (JAXQA_COMMIT: the commit the records name, where the tree travels without its git history)
set -u
out=${OUT:-$PWD/benchmarks/results/gpu}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
python3 - <<'PY' || exit 1
import lzma, pathlib, shutil
for path in pathlib.Path(".devdata").rglob("*"):  # to /tmp/minilm/, /tmp/squad/, unpacked
    if path.is_file():
        to = pathlib.Path("/tmp", path.relative_to(".devdata"))
        to.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".xz":
            to.with_suffix("").write_bytes(lzma.decompress(path.read_bytes()))
        else:
            shutil.copy(path, to)
PY
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$out/gpu.txt"
timeout "${1:-300}" python3 benchmarks/gpu/minilm_vs_pytorch.py --squad-dir /tmp/squad --minilm /tmp/minilm \
    --sides jaxqa-adamw,pytorch,jaxqa-lamb --run-dir /tmp/minilm-runs 2>&1 | tee "$out/minilm_vs_pytorch.log"
cp benchmarks/results/minilm_vs_pytorch_*.json "$out/"
timeout "${2:-240}" python3 benchmarks/gpu/throughput.py --models bert,squeezebert,mobilebert,distilbert 2>&1 | tee "$out/throughput.log"
cp benchmarks/results/throughput_*.json "$out/"
