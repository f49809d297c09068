"""Batches of family sequences drawn from banks: all the sequences of a family at a length.

A family lists every parameter set it can draw with its probability (``Family.support``),
so ``family_bank`` computes all its sequences at a length once (~240k for all families at
L = 17: 4 MiB of uint8 and 2 MiB of probabilities, built in ~0.1 s), and
``generate_rows`` draws a whole batch of any families from the stacked banks in a few
torch ops (~30-70 us for 64-256 rows, whatever the number of families); ``rows_for`` does
the same from given uniform draws, for several steps' rows at once.

A bank has a ``small_share`` (the share of draws with small start values, see
``families.py``) and a ``split``: ``all`` the family's every parameter set, ``train`` those
that are not held out (``heldout.py``), ``heldout`` the held-out ones less every window that
some family's ``train`` split holds too (so a held-out window is never trained on).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch

from lit_loops.checks import check_choice, check_float
from lit_loops.experiments.sequences.families import FAMILIES, VOCAB
from lit_loops.experiments.sequences.heldout import heldout_mask

SPLITS = ("all", "train", "heldout")


@functools.lru_cache(maxsize=256)
def _sets(name: str, length: int, small_share: float) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Every parameter set of family ``name`` at ``length``: its terms ``(N, length)``
    uint8, probabilities ``(N,)`` float64 and parameters."""
    if name not in FAMILIES:
        raise ValueError(f"unknown family {name!r}; known: {sorted(FAMILIES)}")
    fam = FAMILIES[name]
    params, prob = fam.support(length, small_share)
    if prob.numel() == 0:
        raise ValueError(
            f"family {name!r}: no parameters keep a sequence of length {length} inside 0..255"
        )
    seqs = fam.terms(params, length)  # (N, length) int64
    if fam.range_rule == "mod256":
        seqs = seqs % VOCAB  # Python-style remainder: negatives land in 0..255 too
    elif bool((seqs & ~(VOCAB - 1)).any()):  # a bit above the low 8: outside 0..255
        raise AssertionError(f"family {name!r} is not exact: a term left 0..255")
    return seqs.to(torch.uint8), prob, params


@functools.lru_cache(maxsize=256)
def family_bank(
    name: str, length: int, small_share: float = 0.0, split: str = "all"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every sequence of family ``name`` at ``length`` in ``split`` (see the module doc):
    ``(N, length)`` uint8, the terms of its ``support`` in order (a sequence with several
    parameter sets appears once per set), and the cumulative probabilities ``(N,)`` float64,
    ending at exactly 1 (``(0, length)`` and ``(0,)`` for an empty held-out split)."""
    check_choice("split", split, SPLITS)
    check_float("small_share", small_share, 0.0, 1.0)
    seqs, prob, params = _sets(name, length, small_share)
    if split != "all":
        held = heldout_mask(name, params)
        keep = ~held if split == "train" else held & ~_trained_on(seqs, length)
        seqs, prob = seqs[keep], prob[keep]
        if prob.numel() == 0:
            if split == "train":
                raise ValueError(f"family {name!r}: every parameter set is held out at {length}")
            return seqs, prob
    cdf = prob.cumsum(0)
    return seqs, cdf / cdf[-1]


def _rows_as_keys(seqs: torch.Tensor) -> np.ndarray:
    """``(N, L)`` uint8 -> ``(N,)`` keys, one ``L``-byte value a row (compared exactly)."""
    a = np.ascontiguousarray(seqs.numpy())
    return a.view(np.dtype((np.void, a.shape[1]))).ravel()


@functools.lru_cache(maxsize=8)
def _training_windows(length: int) -> np.ndarray:
    """The distinct windows of every family's ``train`` split at ``length``, as keys."""
    train = torch.cat([family_bank(n, length, 0.0, "train")[0] for n in FAMILIES])
    return np.unique(_rows_as_keys(train))


def _trained_on(seqs: torch.Tensor, length: int) -> torch.Tensor:
    """``(N,)`` bool: which rows of ``seqs`` some family's training split holds."""
    train, keys = _training_windows(length), _rows_as_keys(seqs)
    at = np.searchsorted(train, keys).clip(max=len(train) - 1)  # train is sorted
    return torch.from_numpy(train[at] == keys)


@functools.lru_cache(maxsize=16)
def _mixture_bank(
    names: tuple[str, ...], length: int, small_share: float, split: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The banks of ``names`` stacked, ``(N, L)`` uint8, with one cumulative probability
    ``(N,)`` float64 where the i-th family's rows cover ``(i, i + 1]``."""
    banks = [family_bank(n, length, small_share, split) for n in names]
    for n, b in zip(names, banks, strict=True):
        if b[1].numel() == 0:
            raise ValueError(f"family {n!r} has no {split} sequences at length {length}")
    seqs = torch.cat([b[0] for b in banks])
    cdf = torch.cat([i + b[1] for i, b in enumerate(banks)])
    return seqs, cdf


def generate_rows(
    g: torch.Generator,
    names: Sequence[str],
    family: torch.Tensor,
    length: int,
    small_share: float = 0.0,
    split: str = "all",
) -> torch.Tensor:
    """``(B, length)`` int64 sequences in 0..255, row ``i`` drawn from the bank of family
    ``names[family[i]]`` (``family_bank(..., small_share, split)``) for family indices
    ``family (B,)``, by its probabilities."""
    u = torch.rand(family.shape[0], generator=g, dtype=torch.float64)
    return rows_for(names, family, u, length, small_share, split)


def rows_for(
    names: Sequence[str],
    family: torch.Tensor,
    u: torch.Tensor,
    length: int,
    small_share: float = 0.0,
    split: str = "all",
) -> torch.Tensor:
    """``generate_rows`` given its uniform draws ``u`` (B,) float64 in [0, 1), one a row:
    several steps' rows drawn in one call (``SequenceBatchMaker.batches``)."""
    if not names:
        raise ValueError("names must name at least one family")
    seqs, cdf = _mixture_bank(tuple(names), length, float(small_share), split)
    # family i's rows cover (i, i + 1] of cdf: i + u with u uniform in [0, 1) picks one
    return seqs[torch.searchsorted(cdf, family + u, right=True)].long()
