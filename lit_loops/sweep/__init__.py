"""Run a wandb sweep file on this machine, with no wandb server.

    lit-loops sweep configs/sweeps/oocl_linkage.yaml [--workers 2] [--count 12] [--dry-run]

The file is the one ``wandb sweep FILE`` takes. The W&B sweep engine itself (the ``sweeps``
package: the code the wandb server runs) proposes every run from the runs so far (grid,
random, bayes) and picks the runs to stop early (``early_terminate``, hyperband); each
run's command line is built by wandb's own agent code from the file's ``command``, so a run
here is exactly the process ``wandb agent`` would start. Runs log to wandb offline with the
sweep's name as their group (``wandb sync`` puts them online later) and report their
metrics back through :class:`~lit_loops.callbacks.sweep_report.SweepReport`.

Everything lives in ``runs/sweeps/<sweep name>/``::

    sweep.yaml        the sweep file as started (a changed file refuses to resume)
    state.json        every run: id, parameters, state, metric, steps, wall time, run folder
    reports/<id>.json what each run reported; logs/<id>.log its output
    table.csv         the table printed at the end; <metric>.png the metric against the parameters

Started again on the same file, it keeps the finished runs, reruns the crashed or
interrupted ones with the same parameters (from their ``interrupted.ckpt`` where a run got
to write one: Ctrl-C sends each run SIGTERM, see ``CheckpointOnInterrupt``), then asks the
engine for more.

This module is the command line (:func:`main`); the rest is one concern a file:

    file.py    the sweep file: reading it, refusing a bad one
    engine.py  the W&B sweep engine: next parameters, runs to stop early, the schema
    runner.py  the process supervisor: starts, reaps and stops the runs (LocalSweep)
    state.py   the sweep's folder: state.json, reports, logs; what a restart reruns
    report.py  the table, table.csv and the plot at the end
"""

from __future__ import annotations

import argparse
import sys

from lit_loops.sweep.engine import next_params
from lit_loops.sweep.file import check_sweep, load_sweep
from lit_loops.sweep.report import finish, format_table, plot_sweep, write_table
from lit_loops.sweep.runner import LocalSweep, agent_command
from lit_loops.sweep.state import DONE_STATES, RunRecord

__all__ = [
    "LocalSweep",
    "RunRecord",
    "agent_command",
    "check_sweep",
    "format_table",
    "load_sweep",
    "main",
    "plot_sweep",
    "write_table",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lit-loops sweep",
        description="Run a wandb sweep file locally (no wandb server): the W&B sweep engine "
        "proposes the runs, each runs as `wandb agent` would start it.",
    )
    parser.add_argument("file", help="a sweep file, e.g. configs/sweeps/oocl_linkage.yaml")
    parser.add_argument("--workers", type=int, default=1, help="runs at once (default 1)")
    parser.add_argument(
        "--count",
        type=int,
        default=None,
        help="stop once the sweep holds this many runs, counting earlier sessions "
        "(default: run_cap, or the whole grid; required for random and bayes)",
    )
    parser.add_argument("--root", default="runs/sweeps", help="where sweep folders go")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the next command line and exit"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        sweep = LocalSweep(args.file, root=args.root, workers=args.workers, count=args.count)
        if args.dry_run:
            params = next_params(sweep.config, [], sweep.metric_name)
            print(" ".join(agent_command(sweep.config, params)))
            return 0
        runs = sweep.run()
    except ValueError as err:
        print(f"lit-loops sweep: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: start the same command again to resume", file=sys.stderr)
        return 130
    finish(sweep, runs)
    return 0 if all(r.state in DONE_STATES for r in runs) else 1
