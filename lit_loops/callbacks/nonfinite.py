"""A non-finite training loss: stop with a checkpoint of the last good state, or skip the batch.

``action="stop"`` (the default): before the bad loss is backpropagated, the weights are
still those of the last good step; they are saved as ``<run folder>/checkpoints/
nonfinite-step<k>.ckpt`` and the run stops with a ``NonFiniteLossError`` naming the step,
the loss and the loss parts logged this step.

``action="skip"``: the batch's update is undone (weights and optimizer state restored to
what they were before it) and training goes on; each skip is logged as ``train/skipped``
and counted; ``max_skips`` consecutive skips stop the run as above (a diverged run does not
recover by skipping).

Works with automatic and manual optimization (the hooks fire from ``manual_backward`` and
``optimizer.step()`` too). The CLI adds it to every run; configure it with
``--trainer.callbacks+=lit_loops.callbacks.NonFiniteLossGuard --trainer.callbacks.action=skip``
or in a config.
"""

from __future__ import annotations

import copy
import math

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn

from lit_loops.callbacks.interrupt import accumulation_of
from lit_loops.callbacks.run_name import find_run_name
from lit_loops.checks import check, check_choice


class NonFiniteLossError(RuntimeError):
    """A training loss was NaN or infinite."""


class NonFiniteLossGuard(Callback):
    """Stops (``action="stop"``) or skips (``"skip"``) a step whose loss is not finite.

    Args:
        action: ``stop`` or ``skip``.
        max_skips: with ``skip``, this many bad steps in a row stop the run.
    """

    def __init__(self, action: str = "stop", max_skips: int = 10) -> None:
        check_choice("action", action, ("stop", "skip"))
        check(isinstance(max_skips, int) and max_skips >= 1, "max_skips", max_skips, "must be >= 1")
        self.action = action
        self.max_skips = max_skips
        self.skipped = 0  # all skips in this run
        self.in_a_row = 0
        self._bad_step = False  # this step's loss was not finite
        self._saved: dict | None = None  # weights and optimizer state before a bad step

    def on_before_backward(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor
    ) -> None:
        bad = not bool(torch.isfinite(loss.detach()).all())
        # under DDP every rank takes the same decision (one rank stopping alone would hang)
        if not trainer.strategy.reduce_boolean_decision(bad, all=False):
            return
        if self.action == "stop" or self.in_a_row + 1 >= self.max_skips:
            self.stop(trainer, pl_module, loss)
        self._bad_step = True  # until this optimizer step is over (accumulation included)

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if self._bad_step and self._saved is None:  # keep what the step is about to change
            self._saved = {
                "model": copy.deepcopy(pl_module.state_dict()),
                "optimizer": copy.deepcopy(optimizer.state_dict()),
                "optimizer_object": optimizer,
            }

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if (batch_idx + 1) % accumulation_of(trainer, pl_module) != 0:
            return  # the optimizer step is not over yet
        if self._saved is not None:  # undo the bad step's update
            pl_module.load_state_dict(self._saved["model"])
            self._saved["optimizer_object"].load_state_dict(self._saved["optimizer"])
            self._saved = None
        if self._bad_step:
            self.skipped += 1
            self.in_a_row += 1
            rank_zero_warn(
                f"step {trainer.global_step}: the loss is not finite, batch skipped "
                f"({self.in_a_row} in a row, {self.skipped} in all)"
            )
        else:
            self.in_a_row = 0
        self._bad_step = False
        if self.skipped:
            pl_module.log("train/skipped", float(self.skipped), on_step=True, on_epoch=False)

    def stop(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        parts = {
            name: float(value)
            for name, value in trainer.callback_metrics.items()
            if name.startswith("train/") and name != "train/skipped"
        }
        run_name = find_run_name(trainer)
        folder = run_name.run_dir / "checkpoints" if run_name and run_name.run_dir else None
        saved = ""
        if folder is not None:
            # the weights are still the last good step's: this loss has not been backpropagated
            path = folder / f"nonfinite-step{trainer.global_step:06d}.ckpt"
            trainer.save_checkpoint(path)
            saved = f"; the last good state is saved in {path}"
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(parts.items())) or "none logged"
        raise NonFiniteLossError(
            f"the training loss is {_fmt(float(loss.detach().float().mean()))} at step "
            f"{trainer.global_step} (loss parts this step: {shown}){saved}. Lower the "
            "learning rate, clip gradients, or pass action=skip to NonFiniteLossGuard"
        )

    def state_dict(self) -> dict:
        return {"skipped": self.skipped, "in_a_row": self.in_a_row}

    def load_state_dict(self, state_dict: dict) -> None:
        self.skipped = state_dict["skipped"]
        self.in_a_row = state_dict["in_a_row"]


def _fmt(value: float) -> str:
    return str(value) if not math.isfinite(value) else f"{value:.4g}"
