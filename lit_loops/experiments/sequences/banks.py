"""Batches of family sequences drawn from banks: all the sequences of a family at a length.

A family lists every parameter set it can draw with its probability (``Family.support``),
so ``family_bank`` computes all its sequences at a length once (~240k for all families at
L = 17: 4 MiB of uint8 and 2 MiB of probabilities, built in ~0.1 s), and
``generate_rows`` draws a whole batch of any families from the stacked banks in a few
torch ops (~30-70 us for 64-256 rows, whatever the number of families).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

from lit_loops.experiments.sequences.families import FAMILIES, VOCAB


@functools.lru_cache(maxsize=256)
def family_bank(name: str, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every sequence of family ``name`` at ``length``: ``(N, length)`` uint8, the terms of
    its ``support`` in order (a sequence with several parameter sets appears once per set),
    and the cumulative probabilities ``(N,)`` float64, ending at exactly 1."""
    if name not in FAMILIES:
        raise ValueError(f"unknown family {name!r}; known: {sorted(FAMILIES)}")
    fam = FAMILIES[name]
    params, prob = fam.support(length)
    if prob.numel() == 0:
        raise ValueError(
            f"family {name!r}: no parameters keep a sequence of length {length} inside 0..255"
        )
    seqs = fam.terms(params, length)  # (N, length) int64
    if fam.range_rule == "mod256":
        seqs = seqs % VOCAB  # Python-style remainder: negatives land in 0..255 too
    elif bool((seqs & ~(VOCAB - 1)).any()):  # a bit above the low 8: outside 0..255
        raise AssertionError(f"family {name!r} is not exact: a term left 0..255")
    cdf = prob.cumsum(0)
    return seqs.to(torch.uint8), cdf / cdf[-1]


@functools.lru_cache(maxsize=16)
def _mixture_bank(names: tuple[str, ...], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The banks of ``names`` stacked, ``(N, L)`` uint8, with one cumulative probability
    ``(N,)`` float64 where the i-th family's rows cover ``(i, i + 1]``."""
    banks = [family_bank(n, length) for n in names]
    seqs = torch.cat([b[0] for b in banks])
    cdf = torch.cat([i + b[1] for i, b in enumerate(banks)])
    return seqs, cdf


def generate_rows(
    g: torch.Generator, names: Sequence[str], family: torch.Tensor, length: int
) -> torch.Tensor:
    """``(B, length)`` int64 sequences in 0..255, row ``i`` drawn from the bank of family
    ``names[family[i]]`` for family indices ``family (B,)``, by its probabilities."""
    if not names:
        raise ValueError("names must name at least one family")
    seqs, cdf = _mixture_bank(tuple(names), length)
    # family i's rows cover (i, i + 1] of cdf: i + u with u uniform in [0, 1) picks one
    u = family + torch.rand(family.shape[0], generator=g, dtype=torch.float64)
    return seqs[torch.searchsorted(cdf, u, right=True)].long()
