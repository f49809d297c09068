"""Held-out parameters: for every family, parameter sets that training never draws, served
as a validation split of their own (``SequenceDataModule(heldout_params=True)``), to tell a
learned rule from a learned sampling distribution.

Two kinds, both values that training does draw in other combinations:

* a band of start values: the first term ``a`` in ``112..127`` (``0111xxxx`` in binary)
  for the families whose start ranges over 0..255, a smaller band for the others
  (``double_every_third`` and ``alternating_sign_arithmetic`` ``a`` in 56..63 of 0..127;
  ``fibonacci_like`` ``x0`` in 20..23, ``geometric`` ``a`` in 20..23 and
  ``alternating_factors`` ``a`` in 10..11, the bands of their ranges before issue 18 widened
  them), the pairs ``x0 = x1`` of ``fibonacci_mod``;
* a few shape combinations whose parts are trained with other partners: alternating steps
  ``{3, 5}``, growing steps ``(s, c) = (5, 2)``, shrinking steps ``(9, 2)``, alternating
  factors ``{2, 5}``, mixed periods with step 5 going down.

``HELDOUT[name]`` is ``(doc, rule)``: ``rule(params) -> (N,) bool``, the held-out sets among
a family's parameter sets (``Family.support``, after ``finish``). ``banks.family_bank``
builds the ``train`` and ``heldout`` splits from it; the ``heldout`` split leaves out every
window that some family's training split also holds, so held-out windows never appear in a
training batch. None of the real sequences of ``real.py`` is held out (a test checks it).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from lit_loops.experiments.sequences.families import FAMILIES, Params

Rule = Callable[[Params], torch.Tensor]
BAND = (112, 127)  # the start band of the families whose start ranges over 0..255


def _in(x: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    return (x >= lo) & (x <= hi)


def _band(key: str, lo: int = BAND[0], hi: int = BAND[1]) -> Rule:
    return lambda p: _in(p[key], lo, hi)


def _pairs(a: str, b: str, pairs: set[tuple[int, int]]) -> Rule:
    def rule(p: Params) -> torch.Tensor:
        out = torch.zeros_like(p[a], dtype=torch.bool)
        for x, y in pairs:
            out |= (p[a] == x) & (p[b] == y)
        return out

    return rule


def _any(*rules: Rule) -> Rule:
    def rule(p: Params) -> torch.Tensor:
        out = rules[0](p)
        for r in rules[1:]:
            out = out | r(p)
        return out

    return rule


_START = f"the first term a in {BAND[0]}..{BAND[1]}"

HELDOUT: dict[str, tuple[str, Rule]] = {
    "constant": (_START, _band("a")),
    "arithmetic_up": (_START, _band("a")),
    "arithmetic_down": (_START, _band("a")),
    "alternating": (_START + " (any b)", _band("a")),
    "fibonacci_like": ("x0 in 20..23", _band("x0", 20, 23)),
    "alternating_steps": (
        _START + "; steps {s1, s2} = {3, 5}",
        _any(_band("a"), _pairs("s1", "s2", {(3, 5), (5, 3)})),
    ),
    "growing_steps": (_START + "; (s, c) = (5, 2)", _any(_band("a"), _pairs("s", "c", {(5, 2)}))),
    "shrinking_steps": (_START + "; (s, c) = (9, 2)", _any(_band("a"), _pairs("s", "c", {(9, 2)}))),
    "geometric": ("a in 20..23", _band("a", 20, 23)),
    "alternating_factors": (
        "a in 10..11; factors {f1, f2} = {2, 5}",
        _any(_band("a", 10, 11), _pairs("f1", "f2", {(2, 5), (5, 2)})),
    ),
    "rational_factors": (_START, _band("a")),
    "two_step": (_START, _band("a")),
    "three_step": (_START, _band("a")),
    "mixed_periods": (
        _START + "; step 5 going down (d = -1)",
        _any(_band("a"), _pairs("s", "d", {(5, -1)})),
    ),
    "fibonacci_mod": ("start pairs x0 = x1 (1, 1), (2, 2), ...", lambda p: p["x0"] == p["x1"]),
    "double_every_third": ("a in 56..63", _band("a", 56, 63)),
    "floor_geometric": (_START, _band("a")),
    "ceil_geometric": (_START, _band("a")),
    "alternating_sign_arithmetic": ("a in 56..63 (terms 128 -+ a ...)", _band("a", 56, 63)),
    "parity_rule": (_START, _band("a")),
    "switch_rule": ("the first term x0 in 112..127", _band("x0")),
}
assert set(HELDOUT) == set(FAMILIES), "every family has a held-out rule"


def heldout_mask(name: str, params: Params) -> torch.Tensor:
    """``(N,)`` bool: the held-out sets among ``params`` of family ``name``."""
    return HELDOUT[name][1](params)
