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
``val/loss_segment<s>`` and ``val/bpc_segment<s>`` per segment (does a later segment,
which has memories and states from the one before, do better? segment 0 starts cold), and with the recall task ``train/recall_acc`` and
``val/recall_acc`` (argmax at the answer positions; chance is 1 / the number of values).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchmetrics

from lit_loops.checks import check, check_data_decided, check_float
from lit_loops.experiments.block_recurrent.model import (
    BlockRecurrentConfig,
    BlockRecurrentTransformer,
    RecurrentTrainerWrapper,
)
from lit_loops.module import ExperimentModule
from lit_loops.optim import OptimConfig


class BlockRecurrentModule(ExperimentModule):
    """Args:
    num_tokens, sample_len, min_recall_gap: set from the data (the vocabulary, the
        sample length ``k * max_seq_len + 1``, and for the recall task the least distance
        between a key-value pair and its query, which must lie beyond attention's reach).
    net: the model (``BlockRecurrentConfig``, in ``model.py``).
    xl_memories_dropout, state_dropout: drop the carried memories / states before a
        segment with this probability (training only).
    carry_memories: carry the XL memories from segment to segment (False, with
        ``net.recurrent_layers=[]``: the sliding-window baseline, see
        ``RecurrentTrainerWrapper``).
    optim: ``lit_loops.optim`` (the seed's enwik8 recipe: Adam 1e-4).
    accumulate_grad_batches, gradient_clip_val: see the module docs (the seed: 4, 0.5).
    compile: compile the network's layers with ``torch.compile`` (``lit_loops.compile``).
    """

    run_name = "block_recurrent_{source}_d{dim}_L{depth}_w{block_width}_r{recurrent_layers}"

    @property
    def monitor(self) -> tuple[str, str]:
        recall = self.hparams.min_recall_gap is not None  # the recall task's score
        return ("val/recall_acc", "max") if recall else ("val/bpc", "min")

    def __init__(
        self,
        num_tokens: int | None = None,
        sample_len: int | None = None,
        min_recall_gap: int | None = None,
        net: BlockRecurrentConfig = BlockRecurrentConfig(
            dim=256, depth=4, heads=4, max_seq_len=512, block_width=256
        ),
        xl_memories_dropout: float = 0.0,
        state_dropout: float = 0.0,
        carry_memories: bool = True,
        optim: OptimConfig = OptimConfig(optimizer="adam", lr=1e-4),
        accumulate_grad_batches: int = 1,
        gradient_clip_val: float | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__(compile=compile)
        check_data_decided(num_tokens=num_tokens, sample_len=sample_len)
        check(
            isinstance(accumulate_grad_batches, int) and accumulate_grad_batches >= 1,
            "accumulate_grad_batches",
            accumulate_grad_batches,
            "must be an integer >= 1",
        )
        if gradient_clip_val is not None:
            check_float("gradient_clip_val", gradient_clip_val, 0.0, None, low_inclusive=False)
        self.net, self.optim = self.config_arg("net", net), self.config_arg("optim", optim)
        self.save_hyperparameters()
        self.automatic_optimization = False  # per-segment backward (see the module docs)
        self.model = BlockRecurrentTransformer(num_tokens, self.net)
        max_seq_len, depth = self.net.max_seq_len, self.net.depth
        self.wrapper = RecurrentTrainerWrapper(
            self.model, xl_memories_dropout, state_dropout, carry_memories
        )
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
                + ("and compressed " if self.net.use_compressed_mem else "")
                + f"memory per layer, {depth} layers): closer, attention could answer "
                "without the recurrent state. It is set from the data (the least distance "
                "from a pair's value to its answer, data.recall_gap + 4): raise "
                "data.recall_gap or data.sample_len, or lower model.block_width or model.depth",
            )
        self.val_loss = torchmetrics.MeanMetric()
        self.val_segment_loss = torch.nn.ModuleList(
            torchmetrics.MeanMetric() for _ in range(self.segments)
        )
        self.val_segment_bpc = torch.nn.ModuleList(
            torchmetrics.MeanMetric() for _ in range(self.segments)
        )
        self.val_bpc = torchmetrics.MeanMetric()
        self.val_recall = torchmetrics.MeanMetric()

    def _segment_loss(self, logits, targets, batch: dict, s: int):
        """Mean cross-entropy of one segment (over its ``loss_mask`` when given) and, for
        the recall task, (correct, count) at its answers."""
        L_seg = self.net.max_seq_len
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
            self.val_segment_bpc[s](loss / math.log(2), weight=B)
            if recall is not None:
                correct, answers = correct + recall[0], answers + recall[1]
        self.log("val/loss", self.val_loss, on_epoch=True, batch_size=B)
        self.log("val/bpc", self.val_bpc, on_epoch=True, prog_bar=True, batch_size=B)
        for s, metric in enumerate(self.val_segment_loss):
            self.log(f"val/loss_segment{s}", metric, on_epoch=True, batch_size=B)
        for s, metric in enumerate(self.val_segment_bpc):
            self.log(f"val/bpc_segment{s}", metric, on_epoch=True, batch_size=B)
        if answers:
            self.val_recall(correct / answers, weight=answers)
            self.log("val/recall_acc", self.val_recall, on_epoch=True, prog_bar=True, batch_size=B)

    test_step = validation_step

    # -- generation: the interface of lit_loops.callbacks.GenerateSample ---------------
    def generate(self, prompt: torch.Tensor, max_new_tokens: int, **sampling) -> torch.Tensor:
        """``(B, P)`` -> ``(B, P + max_new_tokens)``, KV-cached (``nn.sampling``)."""
        new = self.model.generate(prompt, max_new_tokens, **sampling)
        return torch.cat([prompt, new], dim=1)

    def sample_prompt(self, batch: dict, length: int) -> torch.Tensor:
        return batch["tokens"][:1, :length]

    def decode(self, tokens: list[int]) -> str:
        return bytes(tokens).decode("utf-8", "replace")
