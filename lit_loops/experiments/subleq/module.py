"""The SUBLEQ LightningModule: a bidirectional transformer encoder that predicts the next
machine state, bit by bit, from the current one.

The quantized accuracies (bit accuracy, exact match, per field, per branch) are the
``QuantizedEval`` callback's job: ``validation_step`` returns ``{"pred": output}`` for it.
"""

from __future__ import annotations

from dataclasses import asdict

import torch
import torch.nn.functional as F
import torchmetrics
from torch import nn

from lit_loops.checks import check, check_choice, check_data_decided, check_float, check_int
from lit_loops.experiments.subleq import compiled as compiled_machine
from lit_loops.module import ExperimentModule
from lit_loops.nn import LayerStack, TransformerConfig, TransformerWrapper, VectorReadIn
from lit_loops.optim import OptimConfig

LOSSES = ("l1", "l2", "huber", "bce")
KINDS = ("encoder", "compiled")  # trained from random init (plain or looped), hand-built
COMPILED_BCE_LOGIT = 20.0  # the compiled model's output magnitude for bce (logits)


def state_encoder(net: TransformerConfig, d_state: int, n_tokens: int, loops: int):
    """Bit matrix in, bit matrix out: ``(B, n_tokens, d_state) -> (B, n_tokens, d_state)``.
    Linear read-in, learned positions, the bidirectional blocks (``loops`` passes with
    input injection; 1 is a plain stack), final norm, linear read-out."""
    return TransformerWrapper(
        VectorReadIn(d_state, net.d_model, n_tokens),
        LayerStack(net, causal=False, loops=loops),  # every token sees the whole state
        nn.Linear(net.d_model, d_state),
    )


class SubleqModule(ExperimentModule):
    """Predicts ``encode(step(state))`` from ``encode(state)``.

    Args:
        n_tokens, d_state: linked from the data (the machine's ``n`` and ``d``).
        scale: linked from the data (None, building by hand without it, means 1.0): bits
            are ``±scale``. The encoder reads ``x / scale`` and, for l1/l2/huber, writes
            ``scale *`` its output, so it works in units of ``±1`` whatever the scale;
            losses are measured in those units too. (None by default, as the other linked
            arguments: the CLI treats a value given by hand as a conflict with the data.)
        net: the encoder's blocks (pre-norm, bidirectional).
        looped: apply the ``net.n_layers`` blocks ``loops`` times with input injection.
        loops: loop count when ``looped``.
        loss: ``l1``, ``l2``, ``huber`` (on targets ``±1``) or ``bce`` (output = logits of
            the bits).
        changed_weight: weight of the bits of the fields a step writes (``mem[b]`` and the
            PC); other bits weigh 1. The loss is the weighted mean over the scored bits
            (``batch["mask"]``: not the work area).
        optim: ``lit_loops.optim`` (AdamW 1e-3, weight decay 0.01, 100 warmup steps, cosine).
        compile: compile the network's blocks with ``torch.compile`` (``lit_loops.compile``).
        kind: ``encoder`` (the network above, trained) or ``compiled``: the hand-built
            exact machine of ``compiled.py`` (Giannou et al.), same architecture with
            ``norm="none"`` and the size ``compiled.compiled_config`` decides (``net``,
            ``looped`` and ``loops`` are not used; ``hparams.net`` records that size).
            It outputs ``±1`` (l1/l2/huber, times ``scale``) or logits ``±20`` (bce).
            ``scripts/subleq_compile.py`` writes it as a checkpoint.
        machine: for ``compiled``, the machine's ``s`` and ``m`` (and ``N``, else
            derived from ``d_state``): the data links only ``n`` and ``d``.
        init_noise: for ``compiled``, Gaussian noise of this std added to every weight
            at construction (drawn from the seeded global generator): training from a
            perturbed construction instead of random init (0: the exact machine).
    """

    run_name = "subleq_n{n}_N{N}_L{n_layers}_{loss}"
    monitor = ("val/exact_match", "max")

    def __init__(
        self,
        n_tokens: int | None = None,
        d_state: int | None = None,
        scale: float | None = None,
        net: TransformerConfig = TransformerConfig(d_model=128, n_layers=6, n_heads=4, d_mlp=512),
        looped: bool = False,
        loops: int = 4,
        loss: str = "bce",
        changed_weight: float = 1.0,
        optim: OptimConfig = OptimConfig(weight_decay=0.01, warmup_steps=100, schedule="cosine"),
        compile: bool = False,
        kind: str = "encoder",
        machine: dict | None = None,
        init_noise: float = 0.0,
    ) -> None:
        super().__init__(compile=compile)
        check_data_decided(n_tokens=n_tokens, d_state=d_state)
        scale = 1.0 if scale is None else scale
        check_float("scale", scale, 0.0, low_inclusive=False)
        check_int("loops", loops, min_value=1)
        check_choice("loss", loss, LOSSES)
        check_float("changed_weight", changed_weight, 0.0)
        check_choice("kind", kind, KINDS)
        check_float("init_noise", init_noise, 0.0)
        check(
            init_noise == 0.0 or kind == "compiled",
            "init_noise",
            init_noise,
            "perturbs the compiled machine's weights: set kind: compiled",
        )
        self.net, self.optim = self.config_arg("net", net), self.config_arg("optim", optim)
        self.save_hyperparameters()
        self.scale = scale
        if kind == "compiled":
            spec = compiled_machine.spec_of(n_tokens, d_state, scale, machine)
            logit = COMPILED_BCE_LOGIT if loss == "bce" else 1.0
            self.model = compiled_machine.build_compiled(spec, logit_scale=logit)
            if init_noise:
                with torch.no_grad():
                    for p in self.model.parameters():
                        p.add_(init_noise * torch.randn_like(p))
            self.net = self.model.stack.cfg
            self.hparams["net"] = asdict(self.net)  # the size actually built
        else:
            self.model = state_encoder(self.net, d_state, n_tokens, loops if looped else 1)
        self.val_loss = torchmetrics.MeanMetric()

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
