"""The OOCL LightningModule: a small transformer, the weighted three-part loss, metrics."""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchmetrics
from torch import nn

from lit_loops.checks import check, check_data_decided, check_float, check_int
from lit_loops.experiments.oocl.data import ANSWER_FROM, PARTS, TABLES
from lit_loops.module import ExperimentModule
from lit_loops.nn import LayerStack, TokenReadIn, TransformerConfig, TransformerWrapper
from lit_loops.optim import OptimConfig


class OOCLModule(ExperimentModule):
    """Loss ``k1 * loss_table1 + k2 * loss_table2 + k3 * loss_linkage`` on the last token.

    Args:
        vocab_size: linked from the data (2p + 4).
        seq_len: linked from the data (5).
        k1, k2, k3: weights of the table 1, table 2 and linkage losses; parts with weight
            0 are not computed (their gradient would be zero).
        k1_from_step: table 1's loss counts only from this training step on (k1 = 0
            before), so table 2 and the linkages can be learned first.
        net: the causal transformer (token read-in, learned positions, linear unembedding).
        tie_embeddings: the unembedding is the token embedding transposed (GPT-2).
        optim: AdamW (0.9, 0.98), weight decay 1.0, 10 warmup steps, constant.
        compile: compile the network's blocks with ``torch.compile`` (``lit_loops.compile``).
    """

    run_name = "oocl_{op}_{p}_{holdout1}_{holdout2}_{k1}_{k2}_{k3}"
    monitor = ("val/acc_table1", "max")

    def __init__(
        self,
        vocab_size: int | None = None,
        seq_len: int | None = None,
        k1: float = 1.0,
        k2: float = 1.0,
        k3: float = 1.0,
        k1_from_step: int = 0,
        net: TransformerConfig = TransformerConfig(d_model=128, n_layers=2, n_heads=4, d_mlp=512),
        tie_embeddings: bool = False,
        optim: OptimConfig = OptimConfig(betas=(0.9, 0.98), weight_decay=1.0, warmup_steps=10),
        compile: bool = False,
    ) -> None:
        super().__init__(compile=compile)
        check_data_decided(vocab_size=vocab_size, seq_len=seq_len)
        for name, k in (("k1", k1), ("k2", k2), ("k3", k3)):
            check_float(name, k, 0.0)
        check(k1 + k2 + k3 > 0, "k1, k2, k3", (k1, k2, k3), "at least one must be positive")
        check_int("k1_from_step", k1_from_step, min_value=0)
        self.net, self.optim = self.config_arg("net", net), self.config_arg("optim", optim)
        self.save_hyperparameters()
        d = self.net.d_model
        self.model = TransformerWrapper(
            TokenReadIn(vocab_size, d, seq_len),
            LayerStack(self.net, causal=True),
            nn.Linear(d, vocab_size, bias=False),
            tie_embeddings=tie_embeddings,
        )
        self.weights = {"table1": k1, "table2": k2, "linkage": k3}
        # Separate metric objects per stage and part (torchmetrics keeps their state apart).
        acc = lambda: torchmetrics.classification.MulticlassAccuracy(vocab_size, average="micro")  # noqa: E731
        self.train_acc = nn.ModuleDict({part: acc() for part in PARTS})
        self.val_acc = nn.ModuleDict({t: acc() for t in TABLES})
        self.val_loss = nn.ModuleDict({t: torchmetrics.MeanMetric() for t in TABLES})
        self.test_acc = nn.ModuleDict({t: acc() for t in TABLES})
        self.test_loss = nn.ModuleDict({t: torchmetrics.MeanMetric() for t in TABLES})

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, 5)`` examples -> ``(B, vocab)`` logits for the answer token."""
        # read at ANSWER_FROM, the last position fed: the last block computes only that one
        return self.model(tokens[:, : ANSWER_FROM + 1], last_only=True)[:, -1]

    def part_losses(
        self, batch: dict[str, torch.Tensor]
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per part: (mean cross-entropy, logits). One forward pass over all parts at once."""
        parts = [part for part in PARTS if part in batch]
        logits = self(torch.cat([batch[part] for part in parts]))  # (sum B_part, V)
        out, start = {}, 0
        for part in parts:
            n = len(batch[part])
            part_logits = logits[start : start + n]
            out[part] = (F.cross_entropy(part_logits, batch[part][:, -1]), part_logits)
            start += n
        return out

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        weights = dict(self.weights)
        if self.global_step < self.hparams.k1_from_step:
            weights["table1"] = 0.0
        active = {part: batch[part] for part in PARTS if weights[part] > 0}
        losses = self.part_losses(active)
        loss = sum(weights[part] * part_loss for part, (part_loss, _) in losses.items())
        for part, (part_loss, logits) in losses.items():
            self.train_acc[part](logits, active[part][:, -1])
            self.log(f"train/loss_{part}", part_loss)
            self.log(f"train/acc_{part}", self.train_acc[part])
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _eval_step(self, batch: dict[str, torch.Tensor], stage: str) -> None:
        accs, means = (
            (self.val_acc, self.val_loss) if stage == "val" else (self.test_acc, self.test_loss)
        )
        for table, (loss, logits) in self.part_losses(batch).items():
            n = len(batch[table])
            accs[table](logits, batch[table][:, -1])
            means[table](loss, weight=n)
            kw = dict(on_step=False, on_epoch=True, add_dataloader_idx=False, batch_size=n)
            self.log(f"{stage}/acc_{table}", accs[table], prog_bar=table == "table1", **kw)
            self.log(f"{stage}/loss_{table}", means[table], **kw)

    def validation_step(
        self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._eval_step(batch, "val")

    def test_step(
        self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._eval_step(batch, "test")

    def predict_step(
        self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> dict:
        """Per part: the examples and the predicted answer token (argmax over the vocabulary)."""
        return {part: {"tokens": x, "pred": self(x).argmax(-1)} for part, x in batch.items()}
