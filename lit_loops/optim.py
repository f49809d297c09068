"""Optimizer recipes shared by the experiments."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lit_loops.checks import check, check_float, check_int


def check_adamw_args(
    lr: float, betas: Sequence[float], weight_decay: float, warmup_steps: int
) -> None:
    check_float("lr", lr, 0.0, None, low_inclusive=False)
    check(
        len(betas) == 2 and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas),
        "betas",
        betas,
        "must be two numbers in [0, 1)",
    )
    check_float("weight_decay", weight_decay, 0.0)
    check_int("warmup_steps", warmup_steps, min_value=0)


def adamw_with_warmup(
    model: nn.Module, lr: float, betas: Sequence[float], weight_decay: float, warmup_steps: int
) -> dict:
    """AdamW with linear warmup to ``lr`` over ``warmup_steps``, then constant.

    Weight decay applies to matrices and embeddings only (dim >= 2), not to biases or
    norm gains, as in nanoGPT.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=tuple(betas))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
