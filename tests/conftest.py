from __future__ import annotations

import os
from pathlib import Path

import pytest

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
    "--model.init_args.d_model=32",
    "--model.init_args.d_mlp=64",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]  # fmt: skip
