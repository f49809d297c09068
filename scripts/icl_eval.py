"""Evaluate in-context learning checkpoints against the baselines.

    python scripts/icl_eval.py STANDARD.ckpt LOOPED.ckpt --out runs/icl_eval
    python scripts/icl_eval.py CKPT --dist standard skewed scaled noisy_y orthant

Writes ``errors_<dist>.csv`` / ``.png`` (normalised squared error against the number of
in-context examples, 5-95 % bootstrap bands over prompts) for every checkpoint and every
baseline of the task (``--baselines-from garg`` or ``yang``: the two papers' settings), a
looped checkpoint read at its b and at the papers' loop count (``--read-loops``: 500, 200
for trees), and for looped checkpoints ``loops.csv`` / ``.png`` (the error at 2d examples
against the loop count, up to the larger of 4b and that count). Prints a markdown table.
Several tasks' folders side by side in one figure: ``scripts/icl_figure.py``.
"""

from __future__ import annotations

import argparse

import torch

from lit_loops.experiments.icl.baselines import BASELINE_SETTINGS
from lit_loops.experiments.icl.evaluate import DISTS, evaluate, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("checkpoints", nargs="+", help="ICL checkpoints of the same task")
    parser.add_argument("--out", default="runs/icl_eval", help="folder for CSVs and PNGs")
    parser.add_argument("--prompts", type=int, default=1280)
    parser.add_argument("--dist", nargs="+", default=["standard"], choices=DISTS)
    parser.add_argument(
        "--baselines", nargs="*", default=None, help="names (default: the task's list)"
    )
    parser.add_argument(
        "--baselines-from",
        default="garg",
        choices=sorted(BASELINE_SETTINGS),
        help="whose baseline settings: Garg et al.'s (default) or Yang et al.'s figures'",
    )
    parser.add_argument(
        "--read-loops",
        type=int,
        default=None,
        help="also read looped models after this many loops (default: the papers' 500, "
        "200 for trees; 0: only at b)",
    )
    parser.add_argument(
        "--expensive-prompts",
        type=int,
        default=128,
        help="prompts for baselines that fit a model per prompt and prefix",
    )
    parser.add_argument("--scale", type=float, default=2.0, help="x scale for --dist scaled")
    parser.add_argument("--noise", type=float, default=0.5, help="y noise for --dist noisy_y")
    parser.add_argument(
        "--loops-max", type=int, default=None, help="default: max(4 b, --read-loops)"
    )
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = evaluate(
        args.checkpoints,
        args.out,
        prompts=args.prompts,
        dists=tuple(args.dist),
        baselines=args.baselines,
        expensive_prompts=args.expensive_prompts,
        scale=args.scale,
        noise=args.noise,
        loops_max=args.loops_max,
        seed=args.seed,
        baseline_setting=args.baselines_from,
        read_loops=args.read_loops,
    )
    curves = next(iter(results.values()))
    n = len(next(iter(curves.values()))[0])  # positions = examples 0 .. n-1
    print(table(results, sorted({1, n // 4, n // 2, n - 1})))
    for name, (mean, _, _) in results.get("loops", {}).items():
        picks = sorted({1, len(mean) // 4, len(mean) // 2, len(mean)})
        print(f"\nloops ({name}): " + ", ".join(f"{t}: {mean[t - 1]:.3g}" for t in picks))
        b = results["loops_b"][name]
        if len(mean) >= 4 * b:
            # flatness past b: the worst error over loops b .. 4b against the error at b
            worst = max(mean[b - 1 : 4 * b])
            print(
                f"  worst error in loops {b} .. {4 * b}: {worst:.3g}, x{worst / mean[b - 1]:.2f} the error at b"
            )
    print(f"\nCSV and PNG in {args.out}")


if __name__ == "__main__":
    main()
