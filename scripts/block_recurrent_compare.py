"""The four-variant comparison's table and PNG, from its sweep folder.

    python scripts/block_recurrent_compare.py runs/sweeps/block_recurrent_compare \
        --out docs/block_recurrent_compare.png

Prints the markdown table (bits per byte overall and per segment, spread over seeds, wall
time, tokens/s, bpc at equal wall time) and writes the PNG and ``compare.csv`` beside it.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from lit_loops.experiments.block_recurrent.compare import load_runs, markdown_table, plot, summarise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("sweep_dir", help="runs/sweeps/block_recurrent_compare (its state.json)")
    parser.add_argument("--out", default="docs/block_recurrent_compare.png", help="the PNG")
    args = parser.parse_args()
    runs = load_runs(args.sweep_dir)
    if not runs:
        raise SystemExit(f"{args.sweep_dir}: no run with a validation yet")
    rows = summarise(runs)
    print(markdown_table(rows))
    plot(runs, rows, args.out)
    table = Path(args.out).with_suffix(".csv")
    with open(table, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {args.out} and {table}")


if __name__ == "__main__":
    main()
