"""Where things are: the checkout, SQuAD 1.1, the records, what gpu/pack.py packs
for a GPU machine, and the weights the benchmarks make once and reuse."""

import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SQUAD = ROOT.parent / "shared" / "squad"  # train-v1.1.json and dev-v1.1.json
RESULTS = ROOT / "benchmarks" / "results"
DEVDATA = ROOT / ".devdata"  # what gpu/pack.py packs for a GPU machine without network
WEIGHTS = Path(tempfile.gettempdir()) / "jaxqa-benchmark-weights"  # same_weights.folders' models, made once
