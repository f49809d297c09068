"""Reports a run's metrics to the local sweep runner (``lit-loops sweep``).

The runner starts each run with ``LIT_LOOPS_SWEEP_REPORT=<file>`` in its environment; the
CLI then adds this callback, which rewrites that JSON file after every validation
(``history``: one entry per validation, what early termination reads) and at the end of
fit (``summary``: the last logged value of every metric, as a wandb run's summary holds,
plus ``steps`` and ``run_dir``). A run without the variable never sees this callback.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from lit_loops.callbacks.run_name import find_run_name

REPORT_ENV = "LIT_LOOPS_SWEEP_REPORT"


def metrics_of(trainer: L.Trainer) -> dict[str, float]:
    # NaN/inf become None: JSON has no NaN, and a sweep must not rank a diverged run first
    out = {}
    for key, value in trainer.callback_metrics.items():
        number = float(value)
        out[key] = number if math.isfinite(number) else None
    return out


def write_json_atomically(path: Path, payload: dict[str, Any]) -> None:
    # the runner may read the file at any moment: never let it see half of one
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, path)


class SweepReport(Callback):
    """Writes ``{"history": [...], "summary": {...}, "steps": n, "run_dir": ...}`` to ``path``."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.history: list[dict[str, Any]] = []

    def write(self, trainer: L.Trainer, finished: bool) -> None:
        if not trainer.is_global_zero:
            return
        run_name = find_run_name(trainer)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomically(
            self.path,
            {
                "finished": finished,
                "steps": trainer.global_step,
                "run_dir": str(run_name.run_dir) if run_name and run_name.run_dir else None,
                "summary": metrics_of(trainer),
                "history": self.history,
            },
        )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.write(trainer, finished=False)  # the run folder is known from here on

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        self.history.append({"step": trainer.global_step, **metrics_of(trainer)})
        self.write(trainer, finished=False)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.write(trainer, finished=True)
