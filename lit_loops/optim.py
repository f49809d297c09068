"""The one optimizer and learning-rate schedule recipe of every experiment.

``OptimConfig`` is what a user sets under ``model.init_args.optim``; each module gives its
own defaults (its seed's recipe) and ``ExperimentModule.configure_optimizers`` builds it
with ``configure_optimizer``. Weight decay applies to matrices and embeddings only (dim >=
2), not to biases or norm gains, as in nanoGPT. The schedule is a linear warmup from
``lr / warmup_steps`` to ``lr``, then ``constant``, or ``cosine`` down to ``min_lr`` at the
trainer's ``max_steps``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from lit_loops.checks import check, check_choice, check_float, check_int

OPTIMIZERS = ("adamw", "adam")
SCHEDULES = ("constant", "cosine")


@dataclass
class OptimConfig:
    """Args:
    optimizer: ``adamw`` (decoupled weight decay) or ``adam`` (weight decay as an L2
        penalty).
    lr: the peak learning rate.
    betas, eps: Adam's.
    weight_decay: on matrices and embeddings only.
    warmup_steps: linear warmup from ``lr / warmup_steps`` to ``lr``.
    schedule: after the warmup, ``constant`` or ``cosine`` (to ``min_lr`` at the
        trainer's ``max_steps``, which must then be set).
    min_lr: where the cosine ends.
    """

    optimizer: str = "adamw"
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    warmup_steps: int = 0
    schedule: str = "constant"
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        check_choice("optim.optimizer", self.optimizer, OPTIMIZERS)
        check_float("optim.lr", self.lr, 0.0, None, low_inclusive=False)
        betas = tuple(self.betas)
        check(
            len(betas) == 2 and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas),
            "optim.betas",
            self.betas,
            "must be two numbers in [0, 1)",
        )
        self.betas = betas
        check_float("optim.eps", self.eps, 0.0, low_inclusive=False)
        check_float("optim.weight_decay", self.weight_decay, 0.0)
        check_int("optim.warmup_steps", self.warmup_steps, min_value=0)
        check_choice("optim.schedule", self.schedule, SCHEDULES)
        check_float("optim.min_lr", self.min_lr, 0.0, self.lr)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def lr_factor(step: int, cfg: OptimConfig, max_steps: int = -1) -> float:
    """The learning rate at ``step`` as a fraction of ``cfg.lr``."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    total = max(1, max_steps - cfg.warmup_steps)
    cos = 0.5 * (1 + math.cos(math.pi * min(1.0, (step - cfg.warmup_steps) / total)))
    floor = cfg.min_lr / cfg.lr
    return floor + (1 - floor) * cos


def configure_optimizer(model: nn.Module, cfg: OptimConfig, max_steps: int = -1) -> dict:
    """The optimizer and its per-step schedule, as ``configure_optimizers`` returns them."""
    if cfg.schedule == "cosine":
        check(
            max_steps > 0,
            "trainer.max_steps",
            max_steps,
            "must be set (> 0) for optim.schedule='cosine', which decays to min_lr at max_steps",
        )
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    opt = cls(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, cfg, max_steps))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
