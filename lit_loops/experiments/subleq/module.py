"""The SUBLEQ LightningModule: a bidirectional transformer encoder that predicts the next
machine state, bit by bit, from the current one.

The quantized accuracies (bit accuracy, exact match, per field, per branch) are the
``QuantizedEval`` callback's job: ``validation_step`` returns ``{"pred": output}`` for it.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
import torchmetrics
from torch import nn

from lit_loops.checks import (
    check_choice,
    check_data_decided,
    check_float,
    check_int,
)
from lit_loops.nn import LoopedTransformer, Transformer, TransformerConfig
from lit_loops.optim import OptimizerFromHparams, check_adamw_args, check_schedule_args

LOSSES = ("l1", "l2", "huber", "bce")


class StateEncoder(nn.Module):
    """Bit matrix in, bit matrix out: linear read-in, learned positions, the blocks (a
    ``LoopedTransformer``: ``loops = 1`` is a plain stack), final norm, linear read-out.

    ``forward(x: (B, n_tokens, d_state)) -> (B, n_tokens, d_state)``.
    """

    def __init__(self, cfg: TransformerConfig, d_state: int, n_tokens: int, loops: int) -> None:
        super().__init__()
        self.read_in = nn.Linear(d_state, cfg.d_model)
        self.pos_emb = nn.Embedding(n_tokens, cfg.d_model)
        self.body = LoopedTransformer(cfg, loops)
        self.norm_final = nn.LayerNorm(cfg.d_model) if cfg.norm == "layernorm" else nn.Identity()
        self.read_out = nn.Linear(cfg.d_model, d_state)
        for module in (self.read_in, self.pos_emb, self.read_out):
            Transformer._init_weights(module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(x.shape[1], device=x.device)
        e = self.read_in(x) + self.pos_emb(pos)  # (B, n, D)
        return self.read_out(self.norm_final(self.body(e)))  # (B, n, d)


class SubleqModule(OptimizerFromHparams, L.LightningModule):
    """Predicts ``encode(step(state))`` from ``encode(state)``.

    Args:
        n_tokens, d_state: linked from the data (the machine's ``n`` and ``d``).
        scale: linked from the data (None, building by hand without it, means 1.0): bits
            are ``±scale``. The encoder reads ``x / scale`` and, for l1/l2/huber, writes
            ``scale *`` its output, so it works in units of ``±1`` whatever the scale;
            losses are measured in those units too. (None by default, as the other linked
            arguments: the CLI treats a value given by hand as a conflict with the data.)
        d_model, n_layers, n_heads, d_mlp: the encoder (pre-norm blocks, bidirectional).
        looped: apply the ``n_layers`` blocks ``loops`` times with input injection.
        loops: loop count when ``looped``.
        loss: ``l1``, ``l2``, ``huber`` (on targets ``±1``) or ``bce`` (output = logits of
            the bits).
        changed_weight: weight of the bits of the fields a step writes (``mem[b]`` and the
            PC); other bits weigh 1. The loss is the weighted mean over the scored bits
            (``batch["mask"]``: not the work area).
        optimizer: ``adamw`` (decoupled weight decay), ``adam`` (L2 penalty) or ``sgd``
            (with ``momentum``); weight decay applies to matrices only, not biases or norms.
        lr, betas, momentum, weight_decay: the optimizer (betas: Adam/AdamW; momentum: SGD).
        warmup_steps: linear warmup from ``lr / warmup_steps`` to ``lr``.
        schedule: after warmup, ``cosine`` (to 0 at the trainer's ``max_steps``),
            ``cosine_restarts`` (cosine to 0 every ``restart_steps``, then back to ``lr``),
            ``plateau`` (times ``plateau_factor`` when ``val/loss`` has not improved for
            ``plateau_patience`` validations) or ``constant``.
    """

    def __init__(
        self,
        n_tokens: int | None = None,
        d_state: int | None = None,
        scale: float | None = None,
        d_model: int = 128,
        n_layers: int = 6,
        n_heads: int = 4,
        d_mlp: int = 512,
        looped: bool = False,
        loops: int = 4,
        loss: str = "bce",
        changed_weight: float = 1.0,
        optimizer: str = "adamw",
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        momentum: float = 0.9,
        weight_decay: float = 0.01,
        warmup_steps: int = 100,
        schedule: str = "cosine",
        restart_steps: int = 2000,
        plateau_factor: float = 0.5,
        plateau_patience: int = 3,
    ) -> None:
        super().__init__()
        check_data_decided(n_tokens=n_tokens, d_state=d_state)
        scale = 1.0 if scale is None else scale
        check_float("scale", scale, 0.0, low_inclusive=False)
        check_int("loops", loops, min_value=1)
        check_choice("loss", loss, LOSSES)
        check_float("changed_weight", changed_weight, 0.0)
        check_adamw_args(lr, betas, weight_decay, warmup_steps)
        check_schedule_args(
            optimizer, schedule, momentum, restart_steps, plateau_factor, plateau_patience
        )
        self.save_hyperparameters()
        # TransformerConfig validates d_model, n_layers, n_heads (divides d_model), d_mlp.
        cfg = TransformerConfig(
            vocab_size=d_state,  # the read-in width (the blocks do not use it)
            max_seq_len=n_tokens,
            d_model=d_model,
            n_layers=n_layers,
            n_heads=n_heads,
            d_mlp=d_mlp,
            causal=False,  # every token sees the whole state
        )
        self.scale = scale
        self.model = StateEncoder(cfg, d_state, n_tokens, loops if looped else 1)
        self.val_loss = torchmetrics.MeanMetric()

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, n, d)`` state -> ``(B, n, d)`` next state before quantizing: values near
        ``±scale`` (l1/l2/huber) or logits (bce); the sign decides the bit either way."""
        y = self.model(x / self.scale)
        return y if self.hparams.loss == "bce" else y * self.scale

    def loss(self, pred: torch.Tensor, batch: dict) -> torch.Tensor:
        """Weighted mean over the scored bits of the per-bit loss (see the class docs)."""
        hp = self.hparams
        bits = (batch["target"] > 0).to(pred.dtype)  # (B, n, d) in {0, 1}
        if hp.loss == "bce":
            per_bit = F.binary_cross_entropy_with_logits(pred, bits, reduction="none")
        else:
            unit, target = pred / self.scale, bits * 2 - 1  # in units of ±1
            fn = {"l1": F.l1_loss, "l2": F.mse_loss, "huber": F.huber_loss}[hp.loss]
            per_bit = fn(unit, target, reduction="none")
        # weight = mask * (1 + (changed_weight - 1) * written): (B, n, d)
        weight = batch["mask"] * (1 + (hp.changed_weight - 1) * batch["written"].to(pred.dtype))
        return (per_bit * weight).sum() / weight.sum()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.loss(self(batch["input"]), batch)
        # batch_size given: the batch's (n, d) mask would make Lightning's guess ambiguous.
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["input"].shape[0])
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> dict:
        pred = self(batch["input"])
        B = pred.shape[0]
        self.val_loss(self.loss(pred, batch), weight=B)
        self.log("val/loss", self.val_loss, on_step=False, on_epoch=True, batch_size=B)
        return {"pred": pred}  # for the QuantizedEval callback

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        return {"input": batch["input"], "pred": self(batch["input"])}
