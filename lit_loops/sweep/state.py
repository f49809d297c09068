"""A sweep's folder on disk, and what a restart goes on from.

Everything a sweep keeps lives in ``runs/sweeps/<sweep name>/``::

    sweep.yaml        the sweep file as started (a changed file refuses to resume)
    state.json        every run: id, parameters, state, metric, steps, wall time, run folder
    reports/<id>.json what each run reported; logs/<id>.log its output

``state.json`` is rewritten whole (atomically) at every change of a run, so a runner that
dies at any moment leaves a file a restart can read. On a restart the finished and stopped
runs stay as they are; the pending, running (lost with the runner) and crashed ones run
again with the same parameters, from their ``interrupted.ckpt`` where they got to write one.
The folder's layout and the meaning of resuming are kept here, apart from the process
supervisor (runner.py) that changes the runs.
"""

from __future__ import annotations

import json
from collections.abc import Container
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lit_loops.callbacks.sweep_report import write_json_atomically

DONE_STATES = ("finished", "stopped")  # "stopped": ended early by the engine's early termination
RERUN_STATES = ("pending", "running", "crashed")  # what a restart runs again


@dataclass
class RunRecord:
    """One run of the sweep, as state.json holds it."""

    id: str
    params: dict[str, Any]
    state: str = "pending"
    metric: float | None = None
    steps: int | None = None
    wall_s: float | None = None
    run_dir: str | None = None
    returncode: int | None = None
    attempts: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    # this session only (not saved): one try per invocation, so a run that always crashes
    # cannot loop; a restart tries it again
    attempts_left: bool = True


class SweepFolder:
    """``runs/sweeps/<name>/``: the sweep file as started, state.json, reports/, logs/."""

    def __init__(self, folder: Path, name: str, config: dict[str, Any]) -> None:
        self.folder = folder
        self.name = name
        self.config = config

    def open(self) -> list[RunRecord]:
        """Makes the folder, or checks it holds this sweep; returns the runs saved so far."""
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "reports").mkdir(exist_ok=True)
        (self.folder / "logs").mkdir(exist_ok=True)
        saved = self.folder / "sweep.yaml"
        if saved.exists():
            if yaml.safe_load(saved.read_text()) != self.config:
                raise ValueError(
                    f"{saved} holds a different sweep under the name {self.name!r}: give the "
                    "sweep another `name:` or delete that folder to start over"
                )
        else:
            saved.write_text(yaml.safe_dump(self.config, sort_keys=False))
        state = self.folder / "state.json"
        if not state.exists():
            return []
        return [RunRecord(**r) for r in json.loads(state.read_text())["runs"]]

    def save(self, runs: list[RunRecord]) -> None:
        write_json_atomically(
            self.folder / "state.json",
            {"sweep": self.name, "runs": [_saved(r) for r in runs]},
        )

    def report_path(self, run: RunRecord) -> Path:
        return self.folder / "reports" / f"{run.id}.json"

    def log_path(self, run: RunRecord) -> Path:
        return self.folder / "logs" / f"{run.id}.log"

    def read_report(self, run: RunRecord) -> dict[str, Any] | None:
        """What the run's ``SweepReport`` last wrote; None before its first write."""
        try:
            return json.loads(self.report_path(run).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None


def _saved(run: RunRecord) -> dict[str, Any]:
    record = asdict(run)
    del record["attempts_left"]
    return record


def to_rerun(runs: list[RunRecord], running: Container[str]) -> RunRecord | None:
    """A pending, interrupted or crashed run not yet tried this session, nor ``running`` now."""
    for run in runs:
        if run.state in RERUN_STATES and run.id not in running and run.attempts_left:
            return run
    return None


def interrupted_checkpoint(run: RunRecord) -> Path | None:
    """Where a run stopped by a signal saved itself (``CheckpointOnInterrupt``), if it did."""
    if run.run_dir is None:
        return None
    path = Path(run.run_dir) / "checkpoints" / "interrupted.ckpt"
    return path if path.exists() else None
