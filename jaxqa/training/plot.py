"""A run's curves as a picture: the loss at every logged step and the dev EM and
F1 at every evaluation, from its metrics.jsonl, saved as RUN/curves.png.

    python -m jaxqa.training.plot RUN_DIR [--out FILE]

The picture's format follows FILE's suffix (.png, .jpg, .pdf, .svg, ... as
matplotlib writes them). A line that is not JSON (the last line of a run killed
while it wrote it) is left out. Needs matplotlib (`pip install 'jaxqa[plot]'`).
"""

import argparse
import io
import json
import sys
from pathlib import Path

from jaxqa.errors import Error, write_file


def curves(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """(step, value) of the loss and of each evaluation's exact and f1, in the
    order logged; a resumed run's steps logged again replace the earlier ones,
    and lines cut short (by a kill while one was written) are left out."""
    path = Path(run_dir) / "metrics.jsonl"
    try:
        lines = path.read_text().splitlines()
    except OSError as err:
        raise Error(f"{path}: cannot read the run's metrics ({err.strerror})") from None
    found: dict[str, dict[int, float]] = {"loss": {}, "exact": {}, "f1": {}}
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        for name, values in found.items():
            if isinstance(record, dict) and isinstance(record.get(name), (int, float)) and "step" in record:
                values[int(record["step"])] = float(record[name])
    if not found["loss"]:
        raise Error(f"{path}: no loss logged yet")
    return {name: sorted(values.items()) for name, values in found.items()}


def draw(run_dir: Path, out: Path) -> Path:
    """Draws the run's curves into the file `out`, in the format its suffix names."""
    try:
        import matplotlib
        import matplotlib.backend_bases

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise Error("plotting needs matplotlib (pip install 'jaxqa[plot]')") from None
    kind = out.suffix.lower().lstrip(".")
    formats = matplotlib.backend_bases.FigureCanvasBase.get_supported_filetypes()
    if kind not in formats:
        raise Error(f"--out {out}: name a file whose suffix is a picture format: .{', .'.join(sorted(formats))}")
    found = curves(run_dir)
    evaluated = bool(found["f1"])
    fig, axes = plt.subplots(1, 2 if evaluated else 1, figsize=(10 if evaluated else 5, 3.5), squeeze=False)
    loss = axes[0][0]
    loss.plot(*zip(*found["loss"]), color="tab:blue")
    loss.set(xlabel="step", ylabel="training loss", title=f"{Path(run_dir).name}: loss")
    if evaluated:
        scores = axes[0][1]
        for name in ("exact", "f1"):
            scores.plot(*zip(*found[name]), marker="o", label=name.upper() if name == "f1" else "EM")
        scores.set(xlabel="step", ylabel="dev score", title="evaluations")
        scores.legend()
    fig.tight_layout()
    picture = io.BytesIO()
    fig.savefig(picture, format=kind, dpi=100)
    plt.close(fig)
    return write_file(out, picture.getvalue())


def main(argv=None, prog: str = "python -m jaxqa.training.plot") -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path, help="a jaxqa.train run folder")
    p.add_argument(
        "--out", type=Path, help="the picture to write, in the format of its suffix (default: RUN_DIR/curves.png)"
    )
    args = p.parse_args(argv)
    try:
        out = draw(args.run_dir, args.out or args.run_dir / "curves.png")
    except Error as err:
        print(f"jaxqa.training.plot: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
