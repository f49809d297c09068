"""Optimizer and learning-rate schedule recipes shared by the experiments (one place).

``configure_optimizer(...)`` returns what a LightningModule's ``configure_optimizers``
returns. Weight decay applies to matrices and embeddings only (dim >= 2), not to biases
or norm gains, as in nanoGPT. Schedules start with a linear warmup from
``lr / warmup_steps`` to ``lr``, then:

* ``constant``;
* ``cosine``: to 0 at ``max_steps`` (the trainer's);
* ``cosine_restarts``: cosine to 0 every ``restart_steps``, then back to ``lr``;
* ``plateau``: ``ReduceLROnPlateau`` on a monitored metric, stepped after each validation
  (the module applies the warmup itself, see ``warmup_lr``: a LambdaLR would undo the
  plateau's reductions).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from lit_loops.checks import check, check_choice, check_float, check_int, check_positive_int

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("constant", "cosine", "cosine_restarts", "plateau")


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


def check_schedule_args(
    optimizer: str,
    schedule: str,
    momentum: float,
    restart_steps: int,
    plateau_factor: float,
    plateau_patience: int,
) -> None:
    check_choice("optimizer", optimizer, OPTIMIZERS)
    check_choice("schedule", schedule, SCHEDULES)
    check_float("momentum", momentum, 0.0, 1.0, high_inclusive=False)
    check_positive_int("restart_steps", restart_steps)
    check_float("plateau_factor", plateau_factor, 0.0, 1.0, False, False)
    check_int("plateau_patience", plateau_patience, min_value=0)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def make_optimizer(
    model: nn.Module,
    optimizer: str = "adamw",
    lr: float = 1e-3,
    betas: Sequence[float] = (0.9, 0.999),
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    eps: float = 1e-8,
) -> torch.optim.Optimizer:
    """``adamw`` (decoupled weight decay), ``adam`` (L2 penalty) or ``sgd`` (with momentum)."""
    groups = param_groups(model, weight_decay)
    if optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    cls = torch.optim.AdamW if optimizer == "adamw" else torch.optim.Adam
    return cls(groups, lr=lr, betas=tuple(betas), eps=eps)


def lr_factor(
    step: int,
    schedule: str,
    warmup_steps: int,
    max_steps: int = -1,
    restart_steps: int = 2000,
    floor: float = 0.0,
) -> float:
    """The learning rate at ``step`` as a fraction of ``lr`` (``plateau``: the warmup only);
    cosines decay to ``floor`` (``min_lr / lr``) instead of 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule in ("constant", "plateau"):
        return 1.0
    t = step - warmup_steps
    if schedule == "cosine":
        total = max(1, max_steps - warmup_steps)
        cos = 0.5 * (1 + math.cos(math.pi * min(1.0, t / total)))
    else:
        cos = 0.5 * (1 + math.cos(math.pi * (t % restart_steps) / restart_steps))
    return floor + (1 - floor) * cos


def configure_optimizer(
    model: nn.Module,
    optimizer: str = "adamw",
    lr: float = 1e-3,
    betas: Sequence[float] = (0.9, 0.999),
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    schedule: str = "constant",
    warmup_steps: int = 0,
    max_steps: int = -1,
    restart_steps: int = 2000,
    plateau_factor: float = 0.5,
    plateau_patience: int = 3,
    plateau_monitor: str = "val/loss",
    val_every: int = 1,
    min_lr: float = 0.0,
    eps: float = 1e-8,
) -> dict:
    """The optimizer and its schedule, as ``configure_optimizers`` returns them."""
    check_float("min_lr", min_lr, 0.0, lr)
    opt = make_optimizer(model, optimizer, lr, betas, weight_decay, momentum, eps)
    if schedule == "cosine":
        check(
            max_steps > 0,
            "trainer.max_steps",
            max_steps,
            "must be set (> 0) for schedule='cosine', which decays to 0 at max_steps",
        )
    if schedule != "plateau":
        floor = min_lr / lr

        def factor(step: int) -> float:
            return lr_factor(step, schedule, warmup_steps, max_steps, restart_steps, floor)

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="min", factor=plateau_factor, patience=plateau_patience
    )
    config = {"scheduler": sched, "interval": "step", "frequency": val_every}
    return {
        "optimizer": opt,
        "lr_scheduler": {**config, "monitor": plateau_monitor, "strict": False},
    }


def warmup_lr(optimizer: torch.optim.Optimizer, step: int, lr: float, warmup_steps: int) -> None:
    """Linear warmup done by hand (for ``plateau``, whose scheduler owns the lr after it)."""
    if step < warmup_steps:
        for group in optimizer.param_groups:
            group["lr"] = lr * lr_factor(step, "plateau", warmup_steps)


def adamw_with_warmup(
    model: nn.Module, lr: float, betas: Sequence[float], weight_decay: float, warmup_steps: int
) -> dict:
    """AdamW with linear warmup to ``lr`` over ``warmup_steps``, then constant."""
    return configure_optimizer(
        model, "adamw", lr, betas, weight_decay, schedule="constant", warmup_steps=warmup_steps
    )


class OptimizerFromHparams:
    """LightningModule mixin: ``configure_optimizers`` from the module's ``hparams``
    (optimizer, lr, betas, weight_decay, momentum, schedule, warmup_steps, restart_steps,
    plateau_factor, plateau_patience; optionally min_lr and eps) applied to ``self.model``, and the hand warmup for
    ``plateau``. One recipe for every experiment that exposes these arguments."""

    def configure_optimizers(self):
        hp = self.hparams
        trainer = self._trainer
        every = trainer.val_check_interval if trainer is not None else 1
        return configure_optimizer(
            self.model,
            hp.optimizer,
            hp.lr,
            hp.betas,
            hp.weight_decay,
            hp.momentum,
            schedule=hp.schedule,
            warmup_steps=hp.warmup_steps,
            max_steps=trainer.max_steps if trainer is not None else -1,
            restart_steps=hp.restart_steps,
            plateau_factor=hp.get("plateau_factor", 0.5),
            plateau_patience=hp.get("plateau_patience", 3),
            val_every=every if isinstance(every, int) else 1,
            min_lr=hp.get("min_lr", 0.0),  # optional hparams: not every module has them
            eps=hp.get("eps", 1e-8),
        )

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        if self.hparams.schedule == "plateau":  # its scheduler owns the lr after warmup
            warmup_lr(optimizer, self.global_step, self.hparams.lr, self.hparams.warmup_steps)
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
