"""The in-context learning tasks side by side, as the papers' figure.

    python scripts/icl_figure.py runs/icl_eval_cpu runs/icl_eval_sparse_cpu \
        runs/icl_eval_tree_cpu runs/icl_eval_relu_cpu --out docs/icl_tasks_cpu.png

Each folder is one ``scripts/icl_eval.py --out`` folder (its ``errors_standard.csv``); each
becomes one panel of error against in-context examples, with the bootstrap bands.
"""

from __future__ import annotations

import argparse

from lit_loops.experiments.icl.evaluate import summary_figure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("dirs", nargs="+", help="icl_eval.py output folders, one per task")
    parser.add_argument("--out", default="docs/icl_tasks_cpu.png", help="the PNG to write")
    parser.add_argument("--titles", nargs="*", default=None, help="one per folder")
    args = parser.parse_args()
    print(summary_figure(args.dirs, args.out, args.titles))


if __name__ == "__main__":
    main()
