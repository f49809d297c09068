"""Evaluate a sequences checkpoint as a user reads it: the next term of real integer
sequences (OEIS) after 5..8 terms, in and out of the families, and the accuracy per prefix
length on the validation and held-out sets.

    python scripts/sequences_eval.py runs/<run>/checkpoints/best.ckpt --out runs/sequences_eval
    python scripts/sequences_eval.py CKPT --val-per-family 500  # a tighter estimate

Writes ``real.csv`` (every sequence and prefix: the model's answer, the truth, and what the
training distribution itself answers), ``real.md`` (one line per sequence), ``positions.csv``
and ``positions.png`` (accuracy per prefix length), and prints the summary
(``lit_loops.experiments.sequences.evaluate``).
"""

from __future__ import annotations

import argparse

import torch

from lit_loops.experiments.sequences.evaluate import evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("checkpoint", help="a checkpoint of a sequences run")
    parser.add_argument("--out", default="runs/sequences_eval", help="folder for the tables")
    parser.add_argument(
        "--val-per-family",
        type=int,
        default=None,
        help="fresh validation and held-out sequences per family (default: the run's own)",
    )
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    evaluate(args.checkpoint, args.out, val_per_family=args.val_per_family)
    with open(f"{args.out}/real.md", encoding="utf-8") as f:
        print("\n" + f.read())


if __name__ == "__main__":
    main()
