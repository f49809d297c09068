"""Keep the best weights seen during fit and load them back at its end."""

from __future__ import annotations

import copy
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from lit_loops.checks import check, check_choice, check_float


class RestoreBestWeights(Callback):
    """Tracks ``monitor`` after every validation; at the end of fit (also after early
    stopping) loads the best step's weights back into the module and says which step.

    Args:
        monitor: a logged metric, e.g. ``val/acc_table1`` (None: the module's ``monitor``,
            see ``ExperimentModule``; ``val/loss`` for a module without one).
        mode: ``max`` or ``min`` (None: the module's, with its metric).
        min_delta: the improvement needed to count as better.
        verbose: print when the weights are restored.
    """

    def __init__(
        self,
        monitor: str | None = None,
        mode: str | None = None,
        min_delta: float = 0.0,
        verbose: bool = True,
    ) -> None:
        check(
            monitor is None or (isinstance(monitor, str) and monitor != ""),
            "monitor",
            monitor,
            "must name a logged metric",
        )
        if mode is not None:
            check_choice("mode", mode, ("min", "max"))
        check_float("min_delta", min_delta, 0.0)
        self.monitor = monitor
        self.mode = mode
        self.min_delta = min_delta
        self.verbose = verbose
        self.best_score: float | None = None
        self.best_step: int | None = None
        self.best_weights: dict[str, torch.Tensor] | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.monitor is None:
            self.monitor, default_mode = getattr(pl_module, "monitor", ("val/loss", "min"))
            self.mode = self.mode or default_mode
        self.mode = self.mode or "min"

    def is_better(self, score: float) -> bool:
        if self.best_score is None:
            return True
        if self.mode == "max":
            return score > self.best_score + self.min_delta
        return score < self.best_score - self.min_delta

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            raise KeyError(
                f"RestoreBestWeights monitor={self.monitor!r} was not logged; "
                f"logged metrics: {sorted(trainer.callback_metrics)}"
            )
        score = float(value)
        if score == score and self.is_better(score):  # NaN never counts as better
            self.best_score = score
            self.best_step = trainer.global_step
            self.best_weights = {
                k: v.detach().to("cpu", copy=True) for k, v in pl_module.state_dict().items()
            }

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.best_weights is None:
            return
        pl_module.load_state_dict(self.best_weights)
        if self.verbose:
            rank_zero_info(
                f"RestoreBestWeights: restored weights from step {self.best_step} "
                f"({self.monitor}={self.best_score:.6g})"
            )

    # The tracker is part of the checkpoint, so a resumed run keeps its best.
    def state_dict(self) -> dict[str, Any]:
        return {
            "best_score": self.best_score,
            "best_step": self.best_step,
            "best_weights": copy.copy(self.best_weights),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_score = state_dict["best_score"]
        self.best_step = state_dict["best_step"]
        self.best_weights = state_dict["best_weights"]
