"""Issue 17's lever map: the table, a CSV and the curves, from the ``oocl_*`` sweep folders.

    python scripts/oocl_levers.py runs/sweeps/oocl_phases runs/sweeps/oocl_rank ... \
        --out docs/oocl_levers.png

Prints the Markdown table (a line per run: held-out table 1 final and best, table 2, the
fit of table 1's training cells, the aliases' precision@1, probes) and writes the PNG and
``oocl_levers.csv`` beside it. Folders without a validated run are skipped with a note.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lit_loops.experiments.oocl.levers import lever_rows, markdown_table, plot, write_csv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sweep_dirs", nargs="+", help="runs/sweeps/oocl_<lever> folders")
    parser.add_argument("--out", default="docs/oocl_levers.png", help="the PNG")
    parser.add_argument("--chance", type=float, default=1 / 31, help="drawn as a line (1/p)")
    args = parser.parse_args()
    folders = []
    for folder in map(Path, args.sweep_dirs):
        if (folder / "state.json").is_file():
            folders.append(folder)
        else:
            print(f"skipped {folder}: no state.json")
    rows = lever_rows(folders)
    if not rows:
        raise SystemExit("no run with a validation yet")
    print(markdown_table(rows))
    plot(rows, args.out, chance=args.chance)
    table = Path(args.out).with_suffix(".csv")
    write_csv(rows, table)
    print(f"wrote {args.out} and {table}")


if __name__ == "__main__":
    main()
