"""The sequence LightningModule: next-term prediction over 0..255 on every prefix, with the
design document's distance-weighted cross-entropy.

Loss at a position with true next value ``y``::

    ce(logits, y) * (1 + alpha * w(|prediction - y|))

``prediction`` is the expected value under the predicted distribution (``distance_from:
expected``, the default) or its argmax; ``w`` is ``linear`` (the default), ``quadratic``
or ``sqrt``; the factor is a weight (no gradient flows through it). ``loss:
cross_entropy`` is plain cross-entropy. Positions (``positions``): ``all`` prefixes, each
the same weight, normalised by the number of positions (the document's choice: "include
all positions"); ``last`` only the full-window prediction; ``weighted`` weights position
``t`` by ``t + 1`` (more context, more weight). Padding (variable-length data) never
counts.

Validation (on fresh sequences from a fixed seed) scores the prediction at every prefix
from the family's ``fixed_after`` terms on (``metrics.py``), next to the random predictor's
baselines: accuracy ``val/acc`` (1/256), mean absolute distance ``val/distance`` (85.33)
and cross-entropy ``val/ce`` (ln 256 = 5.55), overall, per phase (``val/acc_phase1``), per
prefix length (``val/acc_pos5``) and per family (``val_family/acc_<family>``); the
prediction after the full window alone, the figure reported before issue 18, is
``val/acc_full`` (``val/acc_full_phase1``, ``val_family/acc_full_<family>``, ...). A second
validation set (``dataloader_idx`` 1, ``SequenceDataModule(heldout_params=True)``) holds
parameters training never draws: ``val/heldout_acc`` and the rest under
``val/heldout_`` and ``val_heldout/``. ``val/loss`` is the training objective over all
positions on the first set; it stays the ``monitor`` (best checkpoint, restored weights)
and what ``cpu.yaml`` stops early on: it is smooth where accuracy saturates, and it is what
the shipped runs selected on.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchmetrics

from lit_loops.checks import check, check_choice, check_data_decided, check_float
from lit_loops.experiments.sequences.metrics import PrefixScores, fixed_after, summary
from lit_loops.experiments.sequences.model import EMBEDDINGS, VOCAB, sequence_model
from lit_loops.module import ExperimentModule
from lit_loops.nn import TransformerConfig
from lit_loops.optim import OptimConfig

LOSSES = ("distance_weighted", "cross_entropy")
DISTANCE_WEIGHTS = {"linear": lambda d: d, "quadratic": lambda d: d**2, "sqrt": torch.sqrt}
DISTANCE_FROM = ("expected", "argmax")
POSITIONS = ("all", "last", "weighted")
# The random predictor's scores (uniform over 0..255).
RANDOM_ACC = 1 / VOCAB
RANDOM_DISTANCE = (VOCAB**2 - 1) / (3 * VOCAB)  # E|U - V| for U, V uniform on 0..255: 85.33
RANDOM_LOSS = math.log(VOCAB)


def sequence_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor,
    loss: str = "distance_weighted",
    alpha: float = 0.1,
    distance_weight: str = "linear",
    distance_from: str = "expected",
    positions: str = "all",
) -> torch.Tensor:
    """``logits (B, T, 256)``, ``target (B, T)`` long, ``valid (B, T)`` bool -> scalar."""
    ce = F.cross_entropy(logits.transpose(1, 2), target, reduction="none")  # (B, T)
    if loss == "distance_weighted":
        with torch.no_grad():
            if distance_from == "expected":
                values = torch.arange(VOCAB, device=logits.device, dtype=logits.dtype)
                pred = logits.softmax(-1) @ values  # (B, T) expected value
            else:
                pred = logits.argmax(-1).to(logits.dtype)
            distance = (pred - target.to(logits.dtype)).abs()
            factor = 1 + alpha * DISTANCE_WEIGHTS[distance_weight](distance)
        ce = ce * factor
    weight = valid.to(ce.dtype)  # (B, T)
    if positions == "last":  # the last valid position of every row
        last = valid.long().cumsum(1).argmax(1, keepdim=True)  # (B, 1)
        weight = torch.zeros_like(weight).scatter_(1, last, 1.0)
    elif positions == "weighted":
        weight = weight * torch.arange(1, ce.shape[1] + 1, device=ce.device, dtype=ce.dtype)
    return (ce * weight).sum() / weight.sum()


class SequenceModule(ExperimentModule):
    """Next-term prediction (see the module docs).

    Args:
        max_len: positions (set from the data: the window + 1 terms).
        family_names, family_phases: the families and their phases (set from the data),
            for the per-family and per-phase metrics.
        embedding: ``tuple`` (default), ``learned`` or ``binary`` (see ``model.py``).
        net: the causal blocks. The document's setting is ``d_model = 2`` (the tuple
            itself), 2-3 layers, 1-2 heads, feed-forward (``d_mlp``) 32-128, no dropout.
        loss, alpha, distance_weight, distance_from, positions: see ``sequence_loss``.
        optim: AdamW (0.9, 0.999), weight decay 0.01, 5000 warmup steps, cosine to 1e-6
            by default (see ``lit_loops.optim``). Gradient clipping is the trainer's
            (``gradient_clip_val`` 1.0, ``gradient_clip_algorithm`` norm or value).
        compile: compile the network's blocks with ``torch.compile`` (``lit_loops.compile``).
    """

    run_name = "sequences_w{window}_{embedding}_d{d_model}_L{n_layers}_{loss}"
    monitor = ("val/loss", "min")

    def __init__(
        self,
        max_len: int | None = None,
        family_names: list[str] | None = None,
        family_phases: list[int] | None = None,
        embedding: str = "tuple",
        net: TransformerConfig = TransformerConfig(
            d_model=2, n_layers=2, n_heads=1, d_mlp=32, activation="gelu"
        ),
        loss: str = "distance_weighted",
        alpha: float = 0.1,
        distance_weight: str = "linear",
        distance_from: str = "expected",
        positions: str = "all",
        optim: OptimConfig = OptimConfig(
            weight_decay=0.01, warmup_steps=5000, schedule="cosine", min_lr=1e-6
        ),
        compile: bool = False,
    ) -> None:
        super().__init__(compile=compile)
        check_data_decided(max_len=max_len)
        check(
            family_names is not None
            and family_phases is not None
            and len(family_names) == len(family_phases),
            "family_names",
            family_names,
            "is set from the DataModule (with family_phases); pass both when building by hand",
        )
        check_choice("embedding", embedding, EMBEDDINGS)
        check_choice("loss", loss, LOSSES)
        check_float("alpha", alpha, 0.0)
        check_choice("distance_weight", distance_weight, DISTANCE_WEIGHTS)
        check_choice("distance_from", distance_from, DISTANCE_FROM)
        check_choice("positions", positions, POSITIONS)
        self.net, self.optim = self.config_arg("net", net), self.config_arg("optim", optim)
        self.save_hyperparameters()
        self.model = sequence_model(self.net, max_len, embedding)
        self.families = list(family_names)
        self.phases = sorted(set(family_phases))
        self.family_phase = torch.tensor(family_phases)
        # every prefix per family (and the full window), on the validation and held-out
        # sets; and the val loss
        self.val_loss = torchmetrics.MeanMetric()
        first = fixed_after(self.families)
        self.val_scores = PrefixScores(first, max_len)
        self.heldout_scores = PrefixScores(first, max_len)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model(tokens)

    # -- generation: the interface of lit_loops.callbacks.GenerateSample ---------------
    def generate(self, prompt: torch.Tensor, max_new_tokens: int, **sampling) -> torch.Tensor:
        """See ``TransformerWrapper.generate`` (greedy by default, beam, sample; KV-cached)."""
        return self.model.generate(prompt, max_new_tokens, **sampling)

    def sample_prompt(self, batch: dict, length: int) -> torch.Tensor:
        """The first validation sequence's first terms (at most the window)."""
        return batch["seq"][:1, : min(length, self.model.max_len - 1)]

    def decode(self, tokens: list[int]) -> str:
        return " ".join(map(str, tokens))

    def loss(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The training loss and the logits ``(B, T, 256)`` (input: all terms but the last)."""
        hp = self.hparams
        seq, valid = batch["seq"], batch["valid"]
        logits = self(seq[:, :-1])
        value = sequence_loss(
            logits,
            seq[:, 1:],
            valid[:, 1:],
            hp.loss,
            hp.alpha,
            hp.distance_weight,
            hp.distance_from,
            hp.positions,
        )
        return value, logits

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, _ = self.loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["seq"].shape[0])
        return loss

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Loader 0: the validation set (``val/loss`` and the scores); loader 1: the
        held-out parameters (scores only)."""
        loss, logits = self.loss(batch)
        seq, valid, family = batch["seq"], batch["valid"], batch["family"]
        scores = self.val_scores if dataloader_idx == 0 else self.heldout_scores
        scores.update(logits, seq, valid, family)
        if dataloader_idx == 0:
            B = seq.shape[0]
            self.val_loss(loss, weight=B)
            self.log(
                "val/loss", self.val_loss, on_step=False, on_epoch=True, batch_size=B,
                add_dataloader_idx=False,
            )  # fmt: skip

    def on_validation_epoch_end(self) -> None:
        # families are equally represented in validation: plain means over families (nan:
        # a family no batch held, e.g. under fast_dev_run or limit_val_batches)
        logs = summary(self.val_scores.compute(), self.families, self.family_phase.tolist())
        self.val_scores.reset()
        if self.heldout_scores.update_count:
            held = self.heldout_scores.compute()
            logs |= summary(
                held, self.families, self.family_phase.tolist(), "val/heldout_", "val_heldout/",
                family_kinds=("acc",),
            )  # fmt: skip
            self.heldout_scores.reset()
        logs |= {
            "val/random_acc": RANDOM_ACC,
            "val/random_distance": RANDOM_DISTANCE,
            "val/random_loss": RANDOM_LOSS,
        }
        self.log_dict(logs, add_dataloader_idx=False)
