"""Validation curves of one run, from its CSV log (``configs/presets/csv_logger.yaml``).

    python scripts/plot_curves.py runs/<name>/<version>/metrics.csv \
        val/exact_match val/acc_memory val/acc_pc --out docs/curves.png

One line per metric against the step (rows where the metric was logged); prints the
values at every validation as a table too.
"""

from __future__ import annotations

import argparse
import csv

from lit_loops.plots import finish_plot


def read_curves(path: str, keys: list[str]) -> dict[str, list[tuple[int, float]]]:
    """``{key: [(step, value), ...]}`` from a Lightning ``metrics.csv``."""
    curves: dict[str, list[tuple[int, float]]] = {k: [] for k in keys}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            for key in keys:
                if row.get(key) not in (None, ""):
                    curves[key].append((int(row["step"]), float(row[key])))
    missing = [k for k, points in curves.items() if not points]
    if missing:
        raise SystemExit(f"{path}: never logged {missing}")
    return curves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("metrics_csv")
    parser.add_argument("keys", nargs="+", help="logged metrics, e.g. val/exact_match")
    parser.add_argument("--out", required=True, help="the PNG")
    parser.add_argument("--title", default="")
    args = parser.parse_args()
    curves = read_curves(args.metrics_csv, args.keys)
    steps = sorted({s for points in curves.values() for s, _ in points})
    print("| step | " + " | ".join(args.keys) + " |")
    print("|" + " --- |" * (len(args.keys) + 1))
    by_key = {k: dict(points) for k, points in curves.items()}
    for step in steps:
        cells = [f"{by_key[k][step]:.4f}" if step in by_key[k] else "" for k in args.keys]
        print(f"| {step} | " + " | ".join(cells) + " |")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for key, points in curves.items():
        ax.plot(*zip(*points, strict=True), marker=".", label=key)
    ax.set_xlabel("step")
    finish_plot(fig, ax, args.out, args.title or args.metrics_csv)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
