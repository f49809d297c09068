"""SIGTERM / Ctrl-C during fit: finish the step, save a checkpoint, exit; a second signal exits at once.

Lightning already turns SIGTERM into a clean stop (``trainer.received_sigterm``: the fit
loop raises ``SIGTERMException`` after the current batch, on every rank). This callback
adds what a researcher needs from it:

* Ctrl-C (SIGINT) takes the same path instead of a ``KeyboardInterrupt`` that may land in
  the middle of a backward pass;
* the stop waits for an optimizer-step boundary when gradients are being accumulated, so
  no half-accumulated gradient is lost, and for a step without validation (see
  ``on_train_batch_end``);
* ``<run folder>/checkpoints/interrupted.ckpt`` is written, and the command that resumes
  it is printed; resuming gives the same weights and metrics as an uninterrupted run;
* a second signal exits at once (status 128 + signal), checkpoint or not.

The CLI adds it to every run; the CLI exits with 128 + the signal number after it.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lit_loops.callbacks.run_name import find_run_name
from lit_loops.lightning_internals import current_batch_index, request_sigterm_stop

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def accumulation_of(trainer: L.Trainer, pl_module: L.LightningModule) -> int:
    """Batches per optimizer step (manual-optimization modules keep their own count)."""
    if not pl_module.automatic_optimization:
        return int(getattr(pl_module, "hparams", {}).get("accumulate_grad_batches", 1) or 1)
    return trainer.accumulate_grad_batches


def validation_follows(trainer: L.Trainer) -> bool:
    """Whether a validation runs at the end of the current training batch."""
    every = trainer.val_check_batch
    if not trainer.enable_validation or not isinstance(every, int):
        return False
    return (current_batch_index(trainer) + 1) % every == 0


class CheckpointOnInterrupt(Callback):
    """Saves ``interrupted.ckpt`` in the run's checkpoint folder when fit is interrupted."""

    def __init__(self, filename: str = "interrupted.ckpt") -> None:
        self.filename = filename
        self.signum: int | None = None  # the first signal received
        self.path: Path | None = None  # where the checkpoint went
        self._previous: dict[int, Any] = {}
        self._stop_at_boundary = False
        self._deferred = False

    # Lightning registers its SIGTERM handler just before the fit loop starts; ours goes on top.
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import threading

        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for signum in SIGNALS:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:  # the second signal: no checkpoint, no waiting
            os._exit(128 + signum)
        self.signum = signum
        self._stop_at_boundary = True
        name = signal.Signals(signum).name
        rank_zero_info(
            f"\n{name} received: saving a checkpoint after this step "
            f"(send {name} again to exit at once)"
        )

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        if (batch_idx + 1) % accumulation_of(trainer, pl_module) != 0:
            return  # mid-accumulation: the step is not done yet
        if self._stop_at_boundary and validation_follows(trainer) and not self._deferred:
            # Lightning's restart from a checkpoint saved after a validation skips one batch
            # count in the logged steps (RESTARTED_ON_LAST): stop one step later instead
            # (once: if every step validates, stop anyway)
            self._deferred = True
            return
        # every rank agrees (a rank stopping alone would hang the others in their next
        # collective); Lightning then raises SIGTERMException at the end of this batch
        if trainer.strategy.reduce_boolean_decision(self._stop_at_boundary, all=False):
            request_sigterm_stop(trainer)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, SIGTERMException):
            self.restore_handlers()  # Lightning skips the teardown hooks on an exception
            return
        exception.signum = int(self.signum or signal.SIGTERM)  # the CLI exits with 128 + signum
        # saved after the step is complete (weights, optimizer, loops, callbacks): a resume
        # goes on with the next batch, exactly as if never stopped
        run_name = find_run_name(trainer)
        folder = run_name.run_dir / "checkpoints" if run_name and run_name.run_dir else Path(".")
        self.path = folder / self.filename
        trainer.save_checkpoint(self.path)
        self.restore_handlers()  # Lightning skips the teardown hooks on an exception
        rank_zero_info(
            f"Interrupted at step {trainer.global_step}: checkpoint {self.path}\n"
            f"Resume with: lit-loops fit --config {folder.parent / 'config.yaml'} "
            f"--ckpt_path {self.path}"
        )

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.restore_handlers()

    def restore_handlers(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
