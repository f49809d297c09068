"""``Throughput``: training wall time and speed, logged beside the metrics, so runs can be
compared at equal wall time as well as at equal steps (e.g. the block-recurrent
comparison, where the recurrent state costs compute).

Logged every ``every_n_steps`` training steps: ``perf/elapsed_s`` (seconds of training
since the first step, validation excluded), ``perf/steps_per_s`` and, when the batch is a
dict with ``"tokens"`` (B, L), ``perf/tokens_per_s`` (B * L per step), both over the last
``every_n_steps`` steps; and ``perf/elapsed_s`` again at every validation, so each
validation point has its training time.
"""

from __future__ import annotations

import time

import lightning as L
from lightning.pytorch.callbacks import Callback

from lit_loops.checks import check_positive_int


class Throughput(Callback):
    """Args:
    every_n_steps: the window (in optimizer steps) of the speed figures.
    """

    def __init__(self, every_n_steps: int = 50) -> None:
        check_positive_int("every_n_steps", every_n_steps)
        self.every_n_steps = every_n_steps
        self.elapsed = 0.0  # training seconds so far (validation not counted)
        self._started: float | None = None  # wall clock of the running training stretch
        self._window_start = 0.0  # self.elapsed at the window's first step
        self._window_steps = 0
        self._window_tokens = 0

    def _now(self) -> float:
        running = time.perf_counter() - self._started if self._started is not None else 0.0
        return self.elapsed + running

    def _pause(self) -> None:
        if self._started is not None:
            self.elapsed += time.perf_counter() - self._started
            self._started = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self._started is None:
            self._started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._window_steps += 1
        tokens = batch.get("tokens") if isinstance(batch, dict) else None
        if tokens is not None and hasattr(tokens, "numel"):
            self._window_tokens += tokens.numel()
        if self._window_steps < self.every_n_steps:
            return
        now = self._now()
        seconds = max(now - self._window_start, 1e-9)
        pl_module.log("perf/elapsed_s", now, on_step=True, on_epoch=False)
        pl_module.log(
            "perf/steps_per_s", self._window_steps / seconds, on_step=True, on_epoch=False
        )
        if self._window_tokens:
            pl_module.log(
                "perf/tokens_per_s", self._window_tokens / seconds, on_step=True, on_epoch=False
            )
        self._window_start, self._window_steps, self._window_tokens = now, 0, 0

    def on_validation_start(self, trainer, pl_module) -> None:
        self._pause()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            pl_module.log("perf/elapsed_s", self._now())

    def on_train_end(self, trainer, pl_module) -> None:
        self._pause()

    def state_dict(self) -> dict:
        return {"elapsed": self._now()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.elapsed = float(state_dict.get("elapsed", 0.0))
