from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in a fresh folder, so ``runs/`` lands in tmp."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def cli(*args: str):
    """Run the real CLI in this process and return it (its .trainer, .model, .datamodule)."""
    from lit_loops.cli import LitLoopsCLI

    return LitLoopsCLI(args=[str(a) for a in args])


# A small, fast OOCL setting for CLI tests: p = 11, a tiny model, no progress bar.
TINY_OOCL = [
    "--config", CONFIGS / "oocl" / "cpu.yaml",
    "--data.init_args.p=11",
    "--data.init_args.batch_size=32",
    "--model.init_args.net.d_model=32",
    "--model.init_args.net.d_mlp=64",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]  # fmt: skip


class SignalAtBatch(Callback):
    """A test callback (``--trainer.callbacks+=``): sends ``signum`` to this process after
    training batch ``batch`` (0-based), as a scheduler or a user would mid-run."""

    def __init__(self, batch: int = 2, signum: int = 15) -> None:
        self.batch, self.signum, self.sent = batch, signum, False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == self.batch and not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.signum)


class NaNAtStep(Callback):
    """A test callback: at ``step`` (``times`` steps in a row) the loss comes out NaN, as a
    diverging run's would: the first parameter is NaN for the forward pass only."""

    def __init__(self, step: int = 3, times: int = 1) -> None:
        self.step, self.times, self.done, self.saved = step, times, 0, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step >= self.step and self.done < self.times:
            self.done += 1
            first = next(pl_module.parameters())
            self.saved = first.detach().clone()
            with torch.no_grad():
                first.fill_(float("nan"))

    def on_before_backward(self, trainer, pl_module, loss):
        if self.saved is not None:  # the weights were good before this batch
            with torch.no_grad():
                next(pl_module.parameters()).copy_(self.saved)
            self.saved = None
