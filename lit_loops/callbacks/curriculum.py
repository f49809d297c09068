"""``CurriculumLog``: logs the current values of the curricula (``lit_loops.schedules``)
that the DataModule and the LightningModule hold as ``curriculum``.

Interface: an attribute ``curriculum`` on either, with ``current(step) -> {name: value}``.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback


class CurriculumLog(Callback):
    """Logs ``curriculum/<name>`` at every training step from the ``curriculum`` of the
    DataModule and of the LightningModule, where they have one: an object with
    ``current(step) -> {name: value}`` (a ``PhaseSchedule``'s shares, a ``StepSchedule``'s
    value, or a collection of them). Nothing is logged without one."""

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int
    ) -> None:
        for owner in (trainer.datamodule, pl_module):
            schedule = getattr(owner, "curriculum", None)
            if schedule is None:
                continue
            for name, value in schedule.current(trainer.global_step).items():
                pl_module.log(f"curriculum/{name}", float(value), on_step=True, on_epoch=False)
