"""The OOCL LightningModule: a small transformer, the weighted three-part loss, metrics."""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchmetrics
from torch import nn

from lit_loops.checks import check, check_data_decided, check_float, check_int
from lit_loops.experiments.oocl.data import ANSWER_FROM, PARTS, TABLES
from lit_loops.module import ExperimentModule
from lit_loops.nn import (
    LayerStack,
    LowRankHead,
    TokenReadIn,
    TransformerConfig,
    TransformerWrapper,
)
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
        k_mixed: weight of the code-switched table-2 cells (the data's ``mixed_cells``),
            issue 17's weaker claim; 0: off.
        net: the causal transformer (token read-in, learned positions, linear unembedding).
        tie_embeddings: the unembedding is the token embedding transposed (GPT-2).
        embedding_rank: factorised embedding and unembedding of this rank (``E = A B``: each
            token owns ``rank`` numbers, one shared map to ``d_model``), a capacity
            bottleneck that both token groups have to share. None: full ones.
        group1_only_from_step: from this step on only the group-1 rows (tokens ``0..p-1``)
            of the token embedding and unembedding train; the body, the other rows and the
            shared factors are frozen ("facts before implications": a body trained on
            table 2 and the linkages, then new-vocabulary embeddings learned against it).
        reinit_group1: re-draw the group-1 rows when that phase starts.
        loops: apply the ``net.n_layers`` blocks this many times (weight-shared, with input
            injection; ``LayerStack``).
        init_scale: every weight matrix and embedding scaled by this after GPT-2's
            initialisation (small initialisation, < 1, favours the low-norm solution).
        grokfast_alpha, grokfast_lamb: Grokfast-EMA (Lee et al. 2024): the gradient plus
            ``lamb`` times its exponential average (decay ``alpha``), amplifying its slow
            part. None: off.
        optim: AdamW (0.9, 0.98), weight decay 1.0, 10 warmup steps, constant.
        compile: compile the network's blocks with ``torch.compile`` (``lit_loops.compile``).

    ``group1_only_from_step`` changes which parameters train mid-run: single-process
    training only (DDP fixes its parameter set at the start).
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
        k_mixed: float = 0.0,
        net: TransformerConfig = TransformerConfig(d_model=128, n_layers=2, n_heads=4, d_mlp=512),
        tie_embeddings: bool = False,
        embedding_rank: int | None = None,
        group1_only_from_step: int | None = None,
        reinit_group1: bool = False,
        loops: int = 1,
        init_scale: float = 1.0,
        grokfast_alpha: float | None = None,
        grokfast_lamb: float = 2.0,
        optim: OptimConfig = OptimConfig(betas=(0.9, 0.98), weight_decay=1.0, warmup_steps=10),
        compile: bool = False,
    ) -> None:
        super().__init__(compile=compile)
        check_data_decided(vocab_size=vocab_size, seq_len=seq_len)
        for name, k in (("k1", k1), ("k2", k2), ("k3", k3), ("k_mixed", k_mixed)):
            check_float(name, k, 0.0)
        check(k1 + k2 + k3 > 0, "k1, k2, k3", (k1, k2, k3), "at least one must be positive")
        check_int("k1_from_step", k1_from_step, min_value=0)
        if embedding_rank is not None:
            check_int("embedding_rank", embedding_rank, min_value=1)
            check(not tie_embeddings, "tie_embeddings", True, "needs full embeddings (no rank)")
        if group1_only_from_step is not None:
            check_int("group1_only_from_step", group1_only_from_step, min_value=0)
        check(
            not reinit_group1 or group1_only_from_step is not None,
            "reinit_group1",
            reinit_group1,
            "needs group1_only_from_step (the step at which the rows are re-drawn)",
        )
        check_int("loops", loops, min_value=1)
        check_float("init_scale", init_scale, 0.0, None, low_inclusive=False)
        if grokfast_alpha is not None:
            check_float("grokfast_alpha", grokfast_alpha, 0.0, 1.0, high_inclusive=False)
            check_float("grokfast_lamb", grokfast_lamb, 0.0)
        self.net, self.optim = self.config_arg("net", net), self.config_arg("optim", optim)
        self.save_hyperparameters()
        d = self.net.d_model
        self.model = TransformerWrapper(
            TokenReadIn(vocab_size, d, seq_len, rank=embedding_rank),
            LayerStack(self.net, causal=True, loops=loops),
            nn.Linear(d, vocab_size, bias=False)
            if embedding_rank is None
            else LowRankHead(d, embedding_rank, vocab_size),
            tie_embeddings=tie_embeddings,
        )
        if init_scale != 1.0:
            with torch.no_grad():
                for weight in self.model.parameters():
                    if weight.dim() >= 2:  # matrices and embeddings; norms keep 1 and 0
                        weight.mul_(init_scale)
        self.p = (vocab_size - 4) // 2  # the vocabulary is 2p + 4 tokens (data.Vocab)
        self._kept_rows: dict[str, torch.Tensor] | None = None  # frozen rows, phase 2
        self._grad_ema: dict[str, torch.Tensor] = {}  # Grokfast's slow gradient
        self.weights = {"table1": k1, "table2": k2, "linkage": k3, "mixed": k_mixed}
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

    # --- phase 2: only the group-1 rows train --------------------------------------------
    def token_tables(self) -> dict[str, torch.Tensor]:
        """The per-token parameter tables, one row per token: ``{name: (V, ·)}``."""
        emb, head = self.model.read_in.tok_emb, self.model.head
        tables = {"emb": emb.weight if isinstance(emb, nn.Embedding) else emb.table.weight}
        if not self.hparams.tie_embeddings:  # tied: the head's weight is the embedding's
            tables["head"] = head.weight if isinstance(head, nn.Linear) else head.table.weight
        return tables

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        start = self.hparams.group1_only_from_step
        if start is None or self.global_step < start or self._kept_rows is not None:
            return
        # entering phase 2 (or resuming in it): freeze everything but the token tables,
        # and remember their rows past group 1 to put back after every step
        tables = self.token_tables()
        for weight in self.model.parameters():
            weight.requires_grad_(any(weight is t for t in tables.values()))
        if self.hparams.reinit_group1 and self.global_step == start:
            with torch.no_grad():
                for t in tables.values():
                    t[: self.p].normal_(std=0.02 * self.hparams.init_scale)
        self._kept_rows = {name: t[self.p :].detach().clone() for name, t in tables.items()}

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self._kept_rows is None:
            return
        with torch.no_grad():  # undo the step (Adam's update, weight decay) on frozen rows
            for name, t in self.token_tables().items():
                t[self.p :].copy_(self._kept_rows[name])

    # --- Grokfast-EMA -------------------------------------------------------------------
    def on_before_optimizer_step(self, optimizer) -> None:
        alpha = self.hparams.grokfast_alpha
        if alpha is None:
            return
        for name, weight in self.model.named_parameters():
            if weight.grad is None:
                continue
            ema = self._grad_ema.get(name)
            ema = weight.grad.detach().clone() if ema is None else ema.lerp_(weight.grad, 1 - alpha)
            self._grad_ema[name] = ema
            weight.grad.add_(ema, alpha=self.hparams.grokfast_lamb)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        if self._grad_ema:  # an exact resume needs the slow gradient
            checkpoint["grokfast_ema"] = {k: v.clone() for k, v in self._grad_ema.items()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        self._grad_ema = dict(checkpoint.get("grokfast_ema", {}))

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
        check(
            weights["mixed"] == 0 or "mixed" in batch,
            "k_mixed",
            weights["mixed"],
            "needs the data's mixed_cells: true (no mixed cells in the batch)",
        )
        active = {part: batch[part] for part in PARTS if weights[part] > 0}
        if not active:  # (1,0,0) before k1_from_step: nothing to learn, the step goes on
            return 0.0 * sum(w.sum() for w in self.parameters() if w.requires_grad)
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
