"""Quantized-output evaluation for experiments whose outputs are bit matrices.

The model's output is snapped to bits (``x > eps`` is bit 1) and compared with the
target's bits (``target > 0``). What the callback reads from each validation batch (a
dict) and from what ``validation_step`` returns::

    outputs["pred"]   (B, T, F) float   the model's output (values or logits)
    batch["target"]   (B, T, F) float   the target, bit 1 where > 0
    batch["mask"]     (T, F) bool       the scored bits (optional: all bits if absent)
    batch["fields"]   {name: (T, F) bool}  optional: fields scored as a whole
    batch["branch_taken"]  (B,) bool    optional: splits exact match in two

It logs, per validation epoch (``<prefix>`` is ``val`` by default)::

    <prefix>/bit_acc        fraction of scored bits right
    <prefix>/exact_match    fraction of samples with every scored bit right
    <prefix>/acc_<name>     fraction of samples with every bit of field <name> right
    <prefix>/exact_branch_taken, <prefix>/exact_branch_not_taken
                            exact match over the samples with / without branch_taken
"""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torchmetrics import MeanMetric

from lit_loops.checks import check, check_float


class QuantizedEval(Callback):
    """Bit-level and whole-sample accuracy of quantized outputs (see the module docstring).

    Args:
        eps: the threshold: an output ``> eps`` is bit 1.
        prefix: the metric names' prefix.
    """

    def __init__(self, eps: float = 0.0, prefix: str = "val") -> None:
        check_float("eps", eps)
        check(
            isinstance(prefix, str) and prefix != "", "prefix", prefix, "must be a non-empty name"
        )
        self.eps = eps
        self.prefix = prefix
        # One metric object per logged name; field metrics appear with the first batch
        # that names the field.
        self.metrics: dict[str, MeanMetric] = {
            name: MeanMetric()
            for name in ("bit_acc", "exact_match", "exact_branch_taken", "exact_branch_not_taken")
        }

    def _metric(self, name: str, device: torch.device) -> MeanMetric:
        if name not in self.metrics:
            self.metrics[name] = MeanMetric()
        return self.metrics[name].to(device)

    def update(self, pred: torch.Tensor, batch: dict) -> dict[str, MeanMetric]:
        """Update the metrics with one batch; returns ``{short name: metric}`` updated."""
        target = batch["target"]
        check(
            pred.shape == target.shape,
            "pred.shape",
            tuple(pred.shape),
            f"must equal target.shape {tuple(target.shape)}",
        )
        device = pred.device
        mask = batch.get("mask")
        if mask is None:
            mask = torch.ones(target.shape[1:], dtype=torch.bool, device=device)
        right = (pred > self.eps) == (target > 0)  # (B, T, F)
        wrong = ~right & mask  # scored bits only
        exact = ~wrong.flatten(1).any(1)  # (B,)
        updated = {}

        def add(name: str, values: torch.Tensor) -> None:
            if values.numel():  # an empty split (no branch taken in a batch) adds nothing
                metric = self._metric(name, device)
                metric.update(values.float())
                updated[name] = metric

        add("bit_acc", right[:, mask])  # (B, bits scored)
        add("exact_match", exact)
        for name, field in (batch.get("fields") or {}).items():
            add(f"acc_{name}", ~(wrong & field).flatten(1).any(1))
        if "branch_taken" in batch:
            taken = batch["branch_taken"].bool()
            add("exact_branch_taken", exact[taken])
            add("exact_branch_not_taken", exact[~taken])
        return updated

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs,
        batch,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not isinstance(outputs, dict) or "pred" not in outputs:
            raise KeyError(
                "QuantizedEval needs validation_step to return {'pred': output}; "
                f"it returned {type(outputs).__name__}"
            )
        B = batch["target"].shape[0]
        for name, metric in self.update(outputs["pred"].detach(), batch).items():
            pl_module.log(
                f"{self.prefix}/{name}",
                metric,
                on_step=False,
                on_epoch=True,
                batch_size=B,
                # The metric lives in this callback, not in the module: name it for Lightning.
                metric_attribute=f"quantized_eval_{name}",
            )
