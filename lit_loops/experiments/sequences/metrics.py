"""Next-term scores at every prefix: accuracy, distance and cross-entropy per family and per
prefix length, and after the full window.

A prediction after the first ``k`` terms (prefix length ``k``, position ``k - 1`` of the
logits) is scored when ``k`` is at least the family's ``fixed_after`` (the terms that fix
its parameters, ``families.py``): before that the next term is a guess among several.
``PrefixScores`` accumulates the sums ``(F, T)`` per family and prefix length (and the
full-window prediction per family, the last valid position of a row) as a torchmetrics
``Metric`` (summed over ranks), and ``summary`` turns them into named figures:

* ``<p>acc``, ``<p>distance``, ``<p>ce``: every scored prefix, the mean over families of
  each family's mean over its scored predictions;
* ``<p>acc_full`` ...: the prediction after the full window only (the figure validation
  reported before issue 18);
* ``<p>acc_phase<n>`` (``<p>acc_full_phase<n>``) ...: the same over one phase's families;
* ``<p>acc_pos<k>``, ``<p>distance_pos<k>``: prefix length ``k``, over the families scored
  there (``k >= fixed_after``: only ``constant`` and ``parity_rule`` at ``k = 1``);
* per family, under ``<family prefix>``: ``acc_<name>``, ``acc_full_<name>``, ...

A family no batch held (``fast_dev_run``, ``limit_val_batches``) is ``nan`` and left out of
the means.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
import torchmetrics

from lit_loops.experiments.sequences.families import FAMILIES

KINDS = ("acc", "distance", "ce")


def fixed_after(names: Sequence[str]) -> torch.Tensor:
    """``(F,)`` long: each family's ``fixed_after`` (1 for a name that is no family)."""
    return torch.tensor([FAMILIES[n].fixed_after if n in FAMILIES else 1 for n in names])


def prefix_scores(
    logits: torch.Tensor, seq: torch.Tensor, valid: torch.Tensor
) -> dict[str, torch.Tensor]:
    """``logits (B, T, 256)`` for ``seq[:, :T]`` (B, T+1) with ``valid (B, T+1)`` ->
    per prediction ``acc``, ``distance``, ``ce`` ``(B, T)`` float and ``valid`` ``(B, T)``."""
    T = logits.shape[1]
    target, ok = seq[:, 1 : T + 1], valid[:, 1 : T + 1]
    pred = logits.argmax(-1)
    ce = F.cross_entropy(logits.float().transpose(1, 2), target, reduction="none")
    return {
        "acc": (pred == target).float(),
        "distance": (pred - target).abs().float(),
        "ce": ce,
        "valid": ok,
    }


class PrefixScores(torchmetrics.Metric):
    """Sums of the scores per family and prefix length (see the module docs).

    Args:
        fixed_after: ``(F,)`` the first scored prefix length of each family.
        positions: the predictions of a row (the window).
    """

    full_state_update = False

    def __init__(self, fixed_after: torch.Tensor, positions: int) -> None:
        super().__init__()
        self.n_families, self.positions = len(fixed_after), positions
        self.register_buffer("first", torch.as_tensor(fixed_after).long(), persistent=False)
        shape = (self.n_families, positions)
        for kind in (*KINDS, "count"):
            self.add_state(kind, torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(
                f"{kind}_full",
                torch.zeros(self.n_families, dtype=torch.float64),
                dist_reduce_fx="sum",
            )

    def update(
        self, logits: torch.Tensor, seq: torch.Tensor, valid: torch.Tensor, family: torch.Tensor
    ) -> None:
        s = prefix_scores(logits, seq, valid)
        B, T = s["acc"].shape
        k = torch.arange(1, T + 1, device=logits.device)  # prefix length of each prediction
        scored = s["valid"] & (k[None, :] >= self.first[family][:, None])  # (B, T)
        index = (family[:, None] * self.positions + k[None, :] - 1).expand(B, T)[scored]
        flat = self.n_families * self.positions
        for kind in KINDS:
            add = torch.zeros(flat, dtype=torch.float64, device=logits.device)
            add.index_add_(0, index, s[kind][scored].double())
            setattr(self, kind, getattr(self, kind) + add.view(self.n_families, -1))
        counts = torch.zeros(flat, dtype=torch.float64, device=logits.device)
        counts.index_add_(0, index, torch.ones_like(index, dtype=torch.float64))
        self.count = self.count + counts.view(self.n_families, -1)
        # the full window: the last valid prediction of every row
        last = s["valid"].long().cumsum(1).argmax(1)  # (B,)
        rows = torch.arange(B, device=logits.device)
        for kind in KINDS:
            add = torch.zeros(self.n_families, dtype=torch.float64, device=logits.device)
            add.index_add_(0, family, s[kind][rows, last].double())
            setattr(self, f"{kind}_full", getattr(self, f"{kind}_full") + add)
        rows_per_family = torch.bincount(family, minlength=self.n_families)
        self.count_full = self.count_full + rows_per_family.to(torch.float64)

    def compute(self) -> dict[str, torch.Tensor]:
        """Means: ``<kind>`` ``(F,)`` over every scored prefix, ``<kind>_pos`` ``(F, T)``
        per prefix length, ``<kind>_full`` ``(F,)``; ``nan`` where nothing was scored."""
        out = {}
        for kind in KINDS:
            out[kind] = getattr(self, kind).sum(1) / self.count.sum(1)
            out[f"{kind}_pos"] = getattr(self, kind) / self.count
            out[f"{kind}_full"] = getattr(self, f"{kind}_full") / self.count_full
        return out


def summary(
    means: dict[str, torch.Tensor],
    families: Sequence[str],
    family_phases: Sequence[int],
    prefix: str = "val/",
    family_prefix: str = "val_family/",
    kinds: Sequence[str] = KINDS,
    family_kinds: Sequence[str] | None = None,
    per_position: bool = True,
) -> dict[str, torch.Tensor]:
    """Named figures from ``PrefixScores.compute()`` (see the module docs); per family only
    ``family_kinds`` (None: all ``kinds``; none without ``family_prefix``)."""
    family_kinds = kinds if family_kinds is None else family_kinds
    logs = {}
    phase_of = torch.tensor(list(family_phases), device=means["acc"].device)
    for kind in kinds:
        for suffix in ("", "_full"):
            per_family = means[kind + suffix]
            logs[f"{prefix}{kind}{suffix}"] = per_family.float().nanmean()
            for p in sorted(set(family_phases)):
                logs[f"{prefix}{kind}{suffix}_phase{p}"] = (
                    per_family[phase_of == p].float().nanmean()
                )
            if family_prefix and kind in family_kinds:
                for name, value in zip(families, per_family, strict=True):
                    logs[f"{family_prefix}{kind}{suffix}_{name}"] = value.float()
        if per_position and kind != "ce":
            per_k = means[f"{kind}_pos"].float().nanmean(0)  # (T,) over the families scored
            for k in range(1, len(per_k) + 1):
                logs[f"{prefix}{kind}_pos{k}"] = per_k[k - 1]
    return logs
