"""The Block-Recurrent Transformer LightningModule: byte-level language modelling on long
samples, segment by segment (truncated backpropagation through time).

A batch ``{"tokens": (B, k * max_seq_len + 1)}`` (+ optional ``loss_mask`` and
``answer_mask``, both (B, k * max_seq_len + 1) bool, from the recall task) is split into
k segments by ``RecurrentTrainerWrapper``; memories and states are carried from segment
to segment, detached. Because nothing flows back across a segment boundary, each
segment's loss is backpropagated as soon as it is computed: the same gradients as one
backward over all segments, with one segment's activations in memory. That needs manual
optimization, so gradient accumulation and clipping are this module's arguments
(``accumulate_grad_batches``, ``gradient_clip_val``), not the Trainer's.

Logged: ``train/loss``, ``val/loss``, ``val/bpc`` (bits per byte: the loss / ln 2),
``val/loss_segment<s>`` per segment (does a later segment, which has memories and states
from the one before, do better?), and with the recall task ``train/recall_acc`` and
``val/recall_acc`` (argmax at the answer positions; chance is 1 / the number of values).
"""

from __future__ import annotations

import math

import lightning as L
import torch
import torch.nn.functional as F
import torchmetrics

from lit_loops.checks import check, check_data_decided, check_float, fail
from lit_loops.nn.block_recurrent import BlockRecurrentTransformer, RecurrentTrainerWrapper
from lit_loops.optim import OptimizerFromHparams, check_adamw_args, check_schedule_args


class BlockRecurrentModule(OptimizerFromHparams, L.LightningModule):
    """Args:
    num_tokens, sample_len, min_recall_gap: set from the data (the vocabulary, the
        sample length ``k * max_seq_len + 1``, and for the recall task the least distance
        between a key-value pair and its query, which must lie beyond attention's reach).
    dim, depth, dim_head, heads, ff_mult, max_seq_len, block_width, num_state_vectors,
        recurrent_layers, read_recurrent_layers, use_compressed_mem,
        compressed_mem_factor, use_flash_attn, use_xpos, gate, all_layers_qk_norm: the
        model (``lit_loops.nn.block_recurrent.BlockRecurrentTransformer``).
    xl_memories_dropout, state_dropout: drop the carried memories / states before a
        segment with this probability (training only).
    optimizer, lr, betas, eps, weight_decay, warmup_steps, schedule, min_lr,
        restart_steps: ``lit_loops.optim`` (the seed's enwik8 recipe: Adam 1e-4).
    accumulate_grad_batches, gradient_clip_val: see the module docs (the seed: 4, 0.5).
    """

    def __init__(
        self,
        num_tokens: int | None = None,
        sample_len: int | None = None,
        min_recall_gap: int | None = None,
        dim: int = 256,
        depth: int = 4,
        dim_head: int = 64,
        heads: int = 4,
        ff_mult: float = 4,
        max_seq_len: int = 512,
        block_width: int = 256,
        num_state_vectors: int | None = None,
        recurrent_layers: list[int] | None = None,
        read_recurrent_layers: list[int] | None = None,
        use_compressed_mem: bool = False,
        compressed_mem_factor: int = 4,
        use_flash_attn: bool = True,
        use_xpos: bool = False,
        gate: str = "fixed",
        all_layers_qk_norm: bool = False,
        xl_memories_dropout: float = 0.0,
        state_dropout: float = 0.0,
        optimizer: str = "adam",
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        schedule: str = "constant",
        min_lr: float = 0.0,
        restart_steps: int = 2000,
        accumulate_grad_batches: int = 1,
        gradient_clip_val: float | None = None,
    ) -> None:
        super().__init__()
        check_data_decided(num_tokens=num_tokens, sample_len=sample_len)
        check_adamw_args(lr, betas, weight_decay, warmup_steps)
        check_schedule_args(optimizer, schedule, momentum, restart_steps, 0.5, 0)
        check_float("eps", eps, 0.0, low_inclusive=False)
        check_float("min_lr", min_lr, 0.0, lr)
        if schedule == "plateau":
            fail("schedule", schedule, "must be constant, cosine or cosine_restarts here")
        check(
            isinstance(accumulate_grad_batches, int) and accumulate_grad_batches >= 1,
            "accumulate_grad_batches",
            accumulate_grad_batches,
            "must be an integer >= 1",
        )
        if gradient_clip_val is not None:
            check_float("gradient_clip_val", gradient_clip_val, 0.0, None, low_inclusive=False)
        self.save_hyperparameters()
        self.automatic_optimization = False  # per-segment backward (see the module docs)
        self.model = BlockRecurrentTransformer(
            num_tokens=num_tokens,
            dim=dim,
            depth=depth,
            dim_head=dim_head,
            heads=heads,
            ff_mult=ff_mult,
            max_seq_len=max_seq_len,
            block_width=block_width,
            num_state_vectors=num_state_vectors,
            recurrent_layers=recurrent_layers,
            read_recurrent_layers=read_recurrent_layers,
            use_compressed_mem=use_compressed_mem,
            compressed_mem_factor=compressed_mem_factor,
            use_flash_attn=use_flash_attn,
            use_xpos=use_xpos,
            gate=gate,
            all_layers_qk_norm=all_layers_qk_norm,
        )
        self.wrapper = RecurrentTrainerWrapper(self.model, xl_memories_dropout, state_dropout)
        check(
            (sample_len - 1) % max_seq_len == 0,
            "data.sample_len",
            sample_len,
            f"must be a multiple of model.max_seq_len={max_seq_len}, plus 1",
        )
        self.segments = (sample_len - 1) // max_seq_len
        if min_recall_gap is not None:
            reach = self.model.attention_reach
            # named by what this module receives: the data's recall_gap + 4 (the gap itself
            # may be unset, then as large as data.sample_len allows)
            check(
                min_recall_gap > reach,
                "min_recall_gap",
                min_recall_gap,
                f"must exceed the model's attention reach, {reach} tokens (a block + one XL "
                + ("and compressed " if use_compressed_mem else "")
                + f"memory per layer, {depth} layers): closer, attention could answer "
                "without the recurrent state. It is set from the data (the least distance "
                "from a pair's value to its answer, data.recall_gap + 4): raise "
                "data.recall_gap or data.sample_len, or lower model.block_width or model.depth",
            )
        self.val_loss = torchmetrics.MeanMetric()
        self.val_segment_loss = torch.nn.ModuleList(
            torchmetrics.MeanMetric() for _ in range(self.segments)
        )
        self.val_bpc = torchmetrics.MeanMetric()
        self.val_recall = torchmetrics.MeanMetric()

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def _segment_loss(self, logits, targets, batch: dict, s: int):
        """Mean cross-entropy of one segment (over its ``loss_mask`` when given) and, for
        the recall task, (correct, count) at its answers."""
        L_seg = self.hparams.max_seq_len
        window = slice(s * L_seg + 1, (s + 1) * L_seg + 1)  # the targets' positions
        ce = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (B, L)
        mask = batch.get("loss_mask")
        if mask is not None:
            m = mask[:, window].float()
            loss = (ce * m).sum() / m.sum().clamp(min=1)
        else:
            loss = ce.mean()
        recall = None
        answers = batch.get("answer_mask")
        if answers is not None:
            a = answers[:, window]
            correct = (logits.argmax(-1) == targets) & a
            recall = (correct.sum(), a.sum())
        return loss, recall

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        opt = self.optimizers()
        k = self.hparams.accumulate_grad_batches
        total, correct, answers = 0.0, 0, 0
        # per-step generator: the dropout draws repeat after a resume
        g = torch.Generator().manual_seed(self.global_step * k + batch_idx % k)
        # DDP reduces gradients once per forward (this step): one backward over all
        # segments there; alone, one backward per segment (less memory, same gradients)
        per_segment = self.trainer.world_size == 1
        pending = []
        for logits, targets, s in self.wrapper.segment_logits(batch["tokens"], g):
            loss, recall = self._segment_loss(logits, targets, batch, s)
            # logged before its backward: a non-finite loss is reported by NonFiniteLossGuard
            # (lit_loops/callbacks/nonfinite.py) with the segment that went wrong
            self.log(f"train/loss_segment{s}", loss.detach(), batch_size=batch["tokens"].shape[0])
            if per_segment:
                self.manual_backward(loss / (self.segments * k))
            else:
                pending.append(loss)
            total += float(loss.detach()) / self.segments
            if recall is not None:
                correct, answers = correct + int(recall[0]), answers + int(recall[1])
        if pending:
            self.manual_backward(torch.stack(pending).sum() / (self.segments * k))
        if (batch_idx + 1) % k == 0:
            if self.hparams.gradient_clip_val is not None:
                self.clip_gradients(
                    opt, self.hparams.gradient_clip_val, gradient_clip_algorithm="norm"
                )
            opt.step()
            opt.zero_grad(set_to_none=True)
            self.lr_schedulers().step()
        B = batch["tokens"].shape[0]
        self.log("train/loss", total, prog_bar=True, batch_size=B)
        if answers:
            self.log("train/recall_acc", correct / answers, prog_bar=True, batch_size=B)
        return torch.tensor(total)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        B = batch["tokens"].shape[0]
        correct, answers = 0, 0
        for logits, targets, s in self.wrapper.segment_logits(batch["tokens"]):
            loss, recall = self._segment_loss(logits, targets, batch, s)
            self.val_loss(loss, weight=B)
            self.val_bpc(loss / math.log(2), weight=B)
            self.val_segment_loss[s](loss, weight=B)
            if recall is not None:
                correct, answers = correct + recall[0], answers + recall[1]
        self.log("val/loss", self.val_loss, on_epoch=True, batch_size=B)
        self.log("val/bpc", self.val_bpc, on_epoch=True, prog_bar=True, batch_size=B)
        for s, metric in enumerate(self.val_segment_loss):
            self.log(f"val/loss_segment{s}", metric, on_epoch=True, batch_size=B)
        if answers:
            self.val_recall(correct / answers, weight=answers)
            self.log("val/recall_acc", self.val_recall, on_epoch=True, prog_bar=True, batch_size=B)

    test_step = validation_step

    def generate_bytes(
        self, prime: bytes, length: int, temperature: float = 1.0, top_k: int | None = None
    ) -> bytes:
        """Continues ``prime`` by ``length`` bytes (KV-cached decoding)."""
        tokens = torch.tensor(list(prime), dtype=torch.long, device=self.device)[None]
        out = self.model.generate(tokens, length, temperature=temperature, top_k=top_k)
        return bytes(out[0].tolist())

    def on_fit_start(self) -> None:
        for logger in self.loggers:
            logger.log_hyperparams({"num_parameters": self.num_parameters})
