"""The sequence families: integer sequences over 0..255 for next-term prediction.

The families follow the curriculum of the design document (seed 002, "Curriculum Learning
Strategy"): phase 1 simple recurrences, phase 2 nested recurrences (the constants follow a
recurrence of their own), phase 3 combined, transformed and conditional recurrences.

A family is a table of its parameter sets: ``support(length, small_share=0.0)`` lists every
set it can draw at a length (a dict of ``(N,)`` int64 tensors, at most 65536 sets) with its
probability ``(N,)`` float64, and ``terms(params, length)`` maps sets to their ``(N, L)``
terms. ``banks.family_bank`` turns the whole support into sequences once per length, and
training draws its rows from there (``banks.generate_rows``). The probabilities: a row of the
family's table uniformly (its shape parameters: steps, phase, direction, ...), then the start
uniformly in the row's range. With ``small_share`` (``w``), a share ``w`` of the draws is
made among the sets whose ``initial`` leading terms (the start values: ``a``; ``a, b``;
``x_0, x_1``) are all in ``0..SMALL_TOP`` (0..3), again a row uniformly (among the rows that
have such sets), then one of its small sets uniformly: the starts a user's sequences begin
with (0, 1, 2, 3), which a uniform start in 0..255 almost never draws (the alternating
``0, 1, 0, 1`` is 1 of 65280 pairs). ``range_rule`` says how the terms stay in 0..255:

- ``exact``: the table holds only the shape parameters that fit in 0..255 at this length,
  each with the starts that keep the whole window in range;
- ``mod256``: the recurrence is defined modulo 256 (``terms`` may return any representative;
  the bank takes it mod 256).

``fixed_after`` is the number of leading terms that fix a family's parameters: from that many
terms on, the rest of the window is determined for at least 95 % of its sequences at length 9
(the next term is a function of the prefix within the family), so a prediction there can be
scored (see ``module.py``); before it the next term is a guess among several.

Terms are indexed from ``t = 0``. Periodic families list every offset in the cycle (``k``),
so that a window does not always start at the cycle's start. What does not depend on the
parameters (the combinations that fit a length, the orbits of the nonlinear recurrences from
all 256 starts, the coefficients of the linear ones) is computed once per length and cached.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import torch

Params = dict[str, torch.Tensor]
TermsFn = Callable[[Params, int], torch.Tensor]
SupportFn = Callable[..., tuple[Params, torch.Tensor]]  # (length, small_share=0.0)

VOCAB = 256
RANGE_RULES = ("mod256", "exact")
SMALL_TOP = 3  # small start values: 0..3


@dataclass(frozen=True)
class Family:
    """A sequence family (see the module doc): ``support(length, small_share=0.0)`` gives
    its parameter sets, a dict of ``(N,)`` int64 tensors, and their probabilities ``(N,)``
    float64; ``terms(params, length)`` their ``(N, length)`` int64 terms (in 0..255 for
    ``exact``, any representative mod 256 for ``mod256``); ``fixed_after``: the leading terms
    that fix the parameters; ``initial``: the leading terms that are start values (0: none
    the small-start share applies to)."""

    name: str
    phase: int
    range_rule: str
    doc: str
    support: SupportFn = field(repr=False)
    terms: TermsFn = field(repr=False)
    fixed_after: int = 1
    initial: int = 1

    def __post_init__(self) -> None:
        if not (isinstance(self.fixed_after, int) and self.fixed_after >= 1):
            raise ValueError(f"family {self.name!r}: fixed_after={self.fixed_after!r} must be >= 1")
        if self.phase not in (1, 2, 3):
            raise ValueError(f"family {self.name!r}: phase={self.phase!r} must be 1, 2 or 3")
        if self.range_rule not in RANGE_RULES:
            raise ValueError(
                f"family {self.name!r}: range_rule={self.range_rule!r} must be one of {RANGE_RULES}"
            )


# ---------------------------------------------------------------------------------------------
# Shared pieces


@functools.cache
def _positions(length: int) -> torch.Tensor:
    return torch.arange(length)  # (L,)


@functools.cache
def _triangular(length: int) -> torch.Tensor:
    t = _positions(length)
    return t * (t - 1) // 2  # (L,) 0, 0, 1, 3, 6, ...: sum of 0..t-1


@functools.cache
def _half_counts(length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """How many first-kind and second-kind steps come before term ``t`` when two kinds
    alternate, first kind first: ``ceil(t / 2)`` and ``floor(t / 2)``, each ``(L,)``."""
    t = _positions(length)
    return (t + 1) // 2, t // 2


def _col(x: torch.Tensor) -> torch.Tensor:
    return x.unsqueeze(1)  # (N,) -> (N, 1); cheaper than x[:, None]


def _grid(grid: dict[str, Iterable[int]], keep: Callable[..., bool] | None) -> torch.Tensor:
    """All combinations of the grid's values that ``keep`` (given one value per key, in the
    grid's order) accepts, ``(K, len(grid))``."""
    rows = [c for c in itertools.product(*grid.values()) if keep is None or keep(*c)]
    return torch.tensor(rows, dtype=torch.int64).reshape(len(rows), len(grid))


def _with_start(cols: torch.Tensor, lo: torch.Tensor | int, count: torch.Tensor | int):
    """Append the start's range ``lo .. lo+count-1`` to parameter rows ``(K, n)`` -> ``(K, n+2)``."""
    k = cols.shape[0]
    lo = torch.as_tensor(lo, dtype=torch.int64).expand(k)
    count = torch.as_tensor(count, dtype=torch.int64).expand(k)
    return torch.cat([cols, _col(lo), _col(count)], 1)


def _offset_table(
    grid: dict[str, Iterable[int]], shape: TermsFn, length: int, top: int = 255,
    keep: Callable[..., bool] | None = None,
) -> torch.Tensor:  # fmt: skip
    """Parameter rows of a family whose terms are ``start + shape``: the grid's combinations
    whose shape spans at most ``top``, with the starts that keep every term in ``0..top``."""
    cols = _grid(grid, keep)
    # (K, L): the terms of start 0
    shape_ = shape(dict(zip(grid, cols.unbind(1), strict=True)), length)
    lo, hi = shape_.amin(1), shape_.amax(1)
    room = top - (hi - lo)  # how many starts above the lowest one still fit
    return _with_start(cols, -lo, room + 1)[room >= 0]


def _offset_family(
    name: str, phase: int, doc: str, grid: dict[str, Iterable[int]], shape: TermsFn,
    terms: TermsFn | None = None, top: int = 255, keep: Callable[..., bool] | None = None,
    fixed_after: int = 1, initial: int = 1,
) -> Family:  # fmt: skip
    """An ``exact`` family whose terms are ``a + shape`` (or ``terms``, a function of
    ``a + shape`` kept in 0..255 when ``a + shape`` is in ``0..top``)."""
    grid = {k: tuple(v) for k, v in grid.items()}  # iterated again for every length

    def offset_terms(p: Params, length: int) -> torch.Tensor:
        return _col(p["a"]) + shape(p, length)

    return _table_family(
        name, phase, "exact", doc, lambda length: _offset_table(grid, shape, length, top, keep),
        tuple(grid), terms or offset_terms, fixed_after=fixed_after, initial=initial,
    )  # fmt: skip


def _table_family(
    name: str, phase: int, range_rule: str, doc: str, table: Callable[[int], torch.Tensor],
    names: Sequence[str], terms: TermsFn, start: str = "a",
    finish: Callable[[Params], Params] | None = None, fixed_after: int = 1, initial: int = 1,
) -> Family:  # fmt: skip
    """A family whose parameter sets are the rows of ``table(length)`` ``(K, n+2)``: the
    parameters ``names``, then the ``lo`` and ``count`` of the start ``start`` (see
    ``_expand``), passed through ``finish`` if given (to derive the parameters ``terms``
    reads from the listed ones)."""
    table = functools.cache(table)

    def support(length: int, small_share: float = 0.0) -> tuple[Params, torch.Tensor]:
        p, prob, row = _expand(table(length), names, start)
        p = finish(p) if finish else p
        if small_share > 0 and initial > 0:
            first = terms(p, length)[:, :initial] % VOCAB  # (N, initial) the start values
            small = (first <= SMALL_TOP).all(1)
            prob = _with_small_share(prob, row, small, small_share)
        return p, prob

    return Family(name, phase, range_rule, doc, support, terms, fixed_after, initial)


def _expand(
    table: torch.Tensor, names: Sequence[str], start: str
) -> tuple[Params, torch.Tensor, torch.Tensor]:
    """The parameter sets of ``table (K, n+2)``: each row once per start in its range,
    ``(N,)`` each with ``N = sum of counts``, the probability of drawing the row uniformly
    then the start uniformly, ``1 / (K count)``, ``(N,)`` float64, and each set's row ``(N,)``."""
    *cols, lo, count = table.unbind(1)
    row = torch.repeat_interleave(torch.arange(table.shape[0]), count)  # (N,) its table row
    first = torch.cumsum(count, 0) - count  # (K,) where each row's run starts
    params = {n: c[row] for n, c in zip(names, cols, strict=True)}
    params[start] = lo[row] + torch.arange(row.shape[0]) - first[row]
    return params, 1.0 / (table.shape[0] * count[row].double()), row


def _with_small_share(
    prob: torch.Tensor, row: torch.Tensor, small: torch.Tensor, share: float
) -> torch.Tensor:
    """``(1 - share) prob`` plus ``share`` spread over the ``small`` sets ``(N,)`` bool: a
    row uniformly among the rows with a small set, then one of its small sets uniformly
    (conditioning ``prob`` itself on ``small`` would favour the rows with few starts)."""
    n_small = torch.bincount(row[small], minlength=int(row.max()) + 1 if len(row) else 0)
    rows_with = int((n_small > 0).sum())
    if rows_with == 0:  # no set starts small (e.g. a countdown from above 3)
        return prob
    extra = small.double() / (rows_with * n_small[row].clamp(min=1).double())
    return (1 - share) * prob + share * extra


UP_DOWN = (1, -1)


def _arith_shape(p: Params, length: int) -> torch.Tensor:
    return _col(p["d"] * p["s"]) * _positions(length)  # (N, L)


# ---------------------------------------------------------------------------------------------
# Phase 1: simple recurrences


def _constant_terms(p: Params, length: int) -> torch.Tensor:
    return _col(p["a"]).repeat(1, length)


def _alternating_finish(p: Params) -> Params:
    # b != a, uniformly: a plus j in 1..255 around the circle
    return {"a": p["a"], "b": (p["a"] + p["j"]) % VOCAB}


def _alternating_terms(p: Params, length: int) -> torch.Tensor:
    return _col(p["a"]) + _col(p["b"] - p["a"]) * (_positions(length) % 2)


@functools.cache
def _fibonacci_like_coefficients(length: int) -> torch.Tensor:
    """``(3, 3, 2, L)``: for ``x_t = p x_{t-1} + q x_{t-2}`` (p, q in 1..2; index 0 unused),
    the coefficients of ``x_0`` and ``x_1`` in ``x_t``, mod 256 (the terms are taken mod 256,
    and this keeps raw terms small at any length)."""
    c = torch.zeros(3, 3, 2, max(length, 2), dtype=torch.int64)
    p, q = torch.arange(3).view(3, 1, 1), torch.arange(3).view(1, 3, 1)
    c[..., 0, 0], c[..., 1, 1] = 1, 1
    for t in range(2, length):
        c[..., t] = (p * c[..., t - 1] + q * c[..., t - 2]) % VOCAB
    return c[..., :length]


def _fibonacci_like_terms(p: Params, length: int) -> torch.Tensor:
    c = _fibonacci_like_coefficients(length)[p["p"], p["q"]]  # (N, 2, L)
    return _col(p["x0"]) * c[:, 0] + _col(p["x1"]) * c[:, 1]


PHASE_1 = [
    _table_family(
        "constant", 1, "exact",
        "Order 0: a, a, a, ... with a in 0..255.",
        lambda length: _with_start(_grid({}, None), 0, VOCAB), (), _constant_terms,
        fixed_after=1,
    ),
    _offset_family(
        "arithmetic_up", 1,
        "Order 1: a + s t with step s in 1..16 (only steps with s (L-1) <= 255 at length L, "
        "so 1..15 at L = 17), start a uniform among those keeping the last term <= 255.",
        {"s": range(1, 17), "d": (1,)}, _arith_shape, fixed_after=2,
    ),
    _offset_family(
        "arithmetic_down", 1,
        "Order 1: a - s t with step s in 1..16 (s (L-1) <= 255), start a uniform among those "
        "keeping the last term >= 0.",
        {"s": range(1, 17), "d": (-1,)}, _arith_shape, fixed_after=2,
    ),
    _table_family(
        "alternating", 1, "exact",
        "Order 2: a, b, a, b, ... with a, b in 0..255, a != b (uniform pairs; a and b being "
        "exchangeable, the window starts on either with equal chance).",
        lambda length: _with_start(_grid({"a": range(VOCAB)}, None), 1, VOCAB - 1), ("a",),
        _alternating_terms, start="j", finish=_alternating_finish, fixed_after=2, initial=2,
    ),
    _table_family(
        "fibonacci_like", 1, "mod256",
        "x_t = p x_{t-1} + q x_{t-2} mod 256 with p, q in {1, 2}, x_0, x_1 in 0..127 (4 x "
        "128 x 128 = 65536 sets; with 0..31, issue 18's first runs learned the 4096 sets "
        "rather than the addition: 0.72-0.79 on held-out starts).",
        lambda length: _with_start(
            _grid({"p": (1, 2), "q": (1, 2), "x1": range(128)}, None), 0, 128
        ),
        ("p", "q", "x1"), _fibonacci_like_terms, start="x0", fixed_after=3, initial=2,
    ),
]  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Phase 2: nested recurrences


def _alternating_steps_shape(p: Params, length: int) -> torch.Tensor:
    first, second = _half_counts(length)
    return _col(p["d"]) * (_col(p["s1"]) * first + _col(p["s2"]) * second)


def _growing_steps_shape(p: Params, length: int) -> torch.Tensor:
    # steps s, s+c, s+2c, ...: term t = s t + c t(t-1)/2
    return _col(p["d"]) * (_col(p["s"]) * _positions(length) + _col(p["c"]) * _triangular(length))


def _shrinking_steps_shape(p: Params, length: int) -> torch.Tensor:
    # steps s, s-c, s-2c, ...: term t = s t - c t(t-1)/2
    return _col(p["d"]) * (_col(p["s"]) * _positions(length) - _col(p["c"]) * _triangular(length))


def _block_shape(width: int) -> TermsFn:
    """Each value held for ``width`` terms; ``k`` terms of the first block already passed."""

    def shape(p: Params, length: int) -> torch.Tensor:
        return _col(p["d"] * p["s"]) * ((_positions(length) + _col(p["k"])) // width)

    return shape


@functools.cache
def _powers(length: int, top: int = 8) -> torch.Tensor:
    """``(top, L)``: ``r^t mod 256`` for ``r`` in ``0..top-1``."""
    r = torch.arange(top).view(top, 1)
    out = torch.ones(top, length, dtype=torch.int64)
    for t in range(1, length):
        out[:, t] = out[:, t - 1] * r[:, 0] % VOCAB
    return out


def _geometric_terms(p: Params, length: int) -> torch.Tensor:
    return _col(p["a"]) * _powers(length)[p["r"]]


@functools.cache
def _alternating_powers(length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``f^ceil(t/2)`` and ``f^floor(t/2)`` mod 256 for ``f`` in 0..7, each ``(8, L)``."""
    first, second = _half_counts(length)
    powers = _powers(length // 2 + 2)
    return powers[:, first], powers[:, second]


def _alternating_factors_terms(p: Params, length: int) -> torch.Tensor:
    first, second = _alternating_powers(length)
    return _col(p["a"]) * first[p["f1"]] * second[p["f2"]]


# (numerator, denominator) of the two factors, applied alternately, first one first. Each
# product is at most 1, so the largest term is the first or the second one.
_RATIONAL_UNORDERED = [((1, 2), (3, 2)), ((1, 2), (4, 3)), ((2, 3), (4, 3)), ((2, 3), (3, 2)),
                       ((3, 4), (4, 3))]  # fmt: skip
RATIONAL_PAIRS = tuple(_RATIONAL_UNORDERED + [(f2, f1) for f1, f2 in _RATIONAL_UNORDERED])


@functools.cache
def _rational_orbits(length: int) -> torch.Tensor:
    """``(P, 256, L)``: the sequence from each start 0..255 for each pair of ``RATIONAL_PAIRS``;
    ``x_{t+1} = floor(x_t n / d)`` with the factors alternating."""
    pairs = torch.tensor(RATIONAL_PAIRS, dtype=torch.int64)  # (P, 2 factors, [n, d])
    x = torch.arange(VOCAB).expand(len(RATIONAL_PAIRS), VOCAB)
    out = [x]
    for t in range(1, length):
        n, d = pairs[:, (t - 1) % 2].unbind(1)
        out.append(out[-1] * _col(n) // _col(d))
    return torch.stack(out, -1)  # (P, 256, L)


def _start_table(orbits: torch.Tensor) -> torch.Tensor:
    """Rows ``[index, 1, count]`` for each orbit set ``(P, 256, L)`` whose starts ``1..count``
    stay in 0..255 (terms grow with the start, so the valid starts are ``1..count``);
    indices with no valid start are left out."""
    valid = (orbits[:, 1:] <= VOCAB - 1).all(-1)  # (P, 255) for starts 1..255
    count = valid.sum(1)
    assert bool((valid.cumprod(1).sum(1) == count).all()), "valid starts must be a prefix"
    index = torch.arange(orbits.shape[0])
    return _with_start(_col(index), 1, count)[count > 0]


def _rational_factors_terms(p: Params, length: int) -> torch.Tensor:
    return _rational_orbits(length)[p["pair"], p["a"]]


# Block lengths, alternating: the seed's (1, 2) only (1, 2, 2, 3, 4, 4, ...). Issue 18 dropped
# (1, 3) and (2, 3): their windows agree with three_step's for up to 7 terms (after 4 4 4 5 5
# three_step says 5, blocks 3, 2 say 6; after 4 4 5 5 5 6 6, 6 or 7), so no predictor could
# score 97 % on both at prefixes 5..7 (RESULTS.md). The code takes any list of patterns.
MIXED_PATTERNS = ((1, 2),)


@functools.cache
def _mixed_blocks(length: int) -> torch.Tensor:
    """``(len(MIXED_PATTERNS), P, L)`` (``P``: the longest period): the block index of term
    ``t`` for each pattern and offset ``k`` (``k`` terms of the cycle already passed),
    counted from term 0's block."""
    t = _positions(length)
    longest = max(map(sum, MIXED_PATTERNS))
    out = torch.zeros(len(MIXED_PATTERNS), longest, length, dtype=torch.int64)
    for i, (m1, m2) in enumerate(MIXED_PATTERNS):
        period = m1 + m2
        for k in range(period):
            u = t + k
            block = 2 * (u // period) + (u % period >= m1).long()
            out[i, k] = block - block[0]
    return out


def _mixed_periods_shape(p: Params, length: int) -> torch.Tensor:
    return _col(p["d"] * p["s"]) * _mixed_blocks(length)[p["pattern"], p["k"]]


PHASE_2 = [
    _offset_family(
        "alternating_steps", 2,
        "Steps alternate +s1, +s2 (e.g. 1, 3, 4, 6, 7, 9: +2, +1) with s1 != s2 in 1..8, "
        "direction d = +1 or -1 (steps -s1, -s2), start a uniform among those in range. "
        "s1 and s2 being exchangeable, either step comes first.",
        {"s1": range(1, 9), "s2": range(1, 9), "d": UP_DOWN}, _alternating_steps_shape,
        keep=lambda s1, s2, d: s1 != s2, fixed_after=3,
    ),
    _offset_family(
        "growing_steps", 2,
        "Steps s, s+c, s+2c, ... (e.g. 1, 2, 4, 7, 11) with s in 1..8, c in 1..4, direction "
        "d = +1 or -1, among the combinations spanning <= 255 (at L = 17 only c = 1; none "
        "beyond L = 23).",
        {"s": range(1, 9), "c": range(1, 5), "d": UP_DOWN}, _growing_steps_shape,
        fixed_after=3,
    ),
    _offset_family(
        "shrinking_steps", 2,
        "Steps s, s-c, s-2c, ... (e.g. 1, 5, 8, 10, 11: +4, +3, +2, +1) with c in 1..4, "
        "s in c+1..16 (so the first two steps go the same way), direction d = +1 or -1. "
        "Steps keep shrinking past zero: the sequence turns back (a parabola).",
        {"s": range(1, 17), "c": range(1, 5), "d": UP_DOWN}, _shrinking_steps_shape,
        keep=lambda s, c, d: s > c, fixed_after=3,
    ),
    _table_family(
        "geometric", 2, "mod256",
        "a r^t mod 256 (e.g. 2, 4, 8, 16) with r in 2..7, a in 1..255 (every product r x "
        "is some window's first step; with a in 1..31 the model learned the orbits, not the "
        "product: 0.6 on held-out starts); even r ends in zeros.",
        lambda length: _with_start(_grid({"r": range(2, 8)}, None), 1, 255),
        ("r",), _geometric_terms, fixed_after=2,
    ),
    _table_family(
        "alternating_factors", 2, "mod256",
        "Factors alternate x f1, x f2 (e.g. 1, 2, 6, 12, 36: x2, x3), mod 256, with "
        "f1 != f2 in 1..7 (either comes first; 42 pairs: with 1..5 the model learned each "
        "pair, not the alternation: 0.3-0.5 on the held-out pair {2, 5}), a in 1..255 (as "
        "geometric's a).",
        lambda length: _with_start(
            _grid({"f1": range(1, 8), "f2": range(1, 8)}, lambda f1, f2: f1 != f2), 1, 255
        ),
        ("f1", "f2"), _alternating_factors_terms, fixed_after=3,
    ),
    _table_family(
        "rational_factors", 2, "exact",
        "Factors alternate x n1/d1, x n2/d2 with the floor (e.g. 8, 4, 6, 3: x1/2, x3/2): "
        "the pair (index 'pair' into RATIONAL_PAIRS: 1/2 & 3/2, 1/2 & 4/3, 2/3 & 4/3, "
        "2/3 & 3/2, 3/4 & 4/3, either first) uniform, then a uniform in 1..floor(255 / first "
        "factor) so the second term fits (each pair's product is <= 1: it never grows more).",
        lambda length: _start_table(_rational_orbits(length)),
        ("pair",), _rational_factors_terms, fixed_after=3,
    ),
    _offset_family(
        "two_step", 2,
        "Each value twice, values stepping by s (e.g. 1, 1, 2, 2, 3, 3) with s in 1..8, "
        "direction d = +1 or -1, offset k in 0..1 in the cycle, start a in range.",
        {"s": range(1, 9), "d": UP_DOWN, "k": range(2)}, _block_shape(2), fixed_after=3,
    ),
    _offset_family(
        "three_step", 2,
        "Each value three times, values stepping by s (e.g. 1, 1, 1, 2, 2, 2) with s in "
        "1..8, direction d = +1 or -1, offset k in 0..2 in the cycle, start a in range.",
        {"s": range(1, 9), "d": UP_DOWN, "k": range(3)}, _block_shape(3), fixed_after=4,
    ),
    _offset_family(
        "mixed_periods", 2,
        "Values stepping by s held for block lengths alternating m1, m2 (the seed's 1, 2, 2, "
        "3, 4, 4, 5, 6, 6: blocks 1, 2) with (m1, m2) = MIXED_PATTERNS[pattern] (only (1, 2)), "
        "offset k in 0..m1+m2-1 in the cycle (so blocks 2, 1 too), s in 1..8, direction "
        "d = +1 or -1, start a in range.",
        {"pattern": range(len(MIXED_PATTERNS)), "k": range(max(map(sum, MIXED_PATTERNS))),
         "s": range(1, 9), "d": UP_DOWN},
        _mixed_periods_shape,
        keep=lambda pattern, k, s, d: k < sum(MIXED_PATTERNS[pattern]), fixed_after=3,
    ),
]  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Phase 3: combined, transformed and conditional recurrences

_FIB_MODULI = range(2, 11)
_LCM = 2520  # lcm(2..10): coefficients reduced mod 2520 stay right mod every m


@functools.cache
def _fibonacci_coefficients(length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Coefficients of ``x_0`` and ``x_1`` in term ``t`` of ``x_t = x_{t-1} + x_{t-2}``:
    ``F(t-1)`` and ``F(t)`` (``F(-1) = 1``), mod 2520, each ``(L,)``."""
    a, b = [1, 0], [0, 1]
    for _ in range(2, length):
        a.append((a[-1] + a[-2]) % _LCM)
        b.append((b[-1] + b[-2]) % _LCM)
    return torch.tensor(a[:length]), torch.tensor(b[:length])


def _fibonacci_mod_finish(p: Params) -> Params:
    # j in 1..m^2-1 is a start pair other than (0, 0) (which would stay 0)
    m, j = p["m"], p["j"]
    return {"m": m, "x0": j // m, "x1": j % m}


def _fibonacci_mod_table(length: int) -> torch.Tensor:
    m = torch.tensor(_FIB_MODULI).view(-1, 1)
    return _with_start(m, 1, m[:, 0] ** 2 - 1)


def _fibonacci_mod_terms(p: Params, length: int) -> torch.Tensor:
    a, b = _fibonacci_coefficients(length)
    return (_col(p["x0"]) * a + _col(p["x1"]) * b) % _col(p["m"])


@functools.cache
def _doubling(length: int) -> torch.Tensor:
    """``(3, L)``: factor 2 where ``(t + k) % 3 == 2`` (every third term), else 1."""
    t = _positions(length)
    return torch.stack([1 + ((t + k) % 3 == 2).long() for k in range(3)])


def _double_every_third_terms(p: Params, length: int) -> torch.Tensor:
    return (_col(p["a"]) + _arith_shape(p, length)) * _doubling(length)[p["k"]]


GEOMETRIC_RATIOS = ((1, 2), (2, 3), (3, 4), (4, 5), (5, 4), (4, 3), (3, 2))
_CAP = 1 << 40  # terms this large are out of range anyway (their parameters are never listed)


@functools.cache
def _rounded_geometric(length: int, ceil: bool) -> torch.Tensor:
    """``(R, 256, L)``: ``floor`` (or ``ceil``) of ``a (n/d)^t`` for each ratio of
    ``GEOMETRIC_RATIOS`` and start ``a`` in 0..255, exactly (Python integers: a float could
    round 9 (4/3)^2 = 16 to 15.99...), capped at 2^40."""
    out = torch.empty(len(GEOMETRIC_RATIOS), VOCAB, length, dtype=torch.int64)
    for i, (n, d) in enumerate(GEOMETRIC_RATIOS):
        for t in range(length):
            r = Fraction(n, d) ** t
            num, den = r.numerator, r.denominator
            if ceil:
                col = [min(-(-a * num // den), _CAP) for a in range(VOCAB)]
            else:
                col = [min(a * num // den, _CAP) for a in range(VOCAB)]
            out[i, :, t] = torch.tensor(col)
    return out


def _rounded_geometric_family(name: str, ceil: bool) -> Family:
    rounding = "ceil" if ceil else "floor"

    def terms(p: Params, length: int) -> torch.Tensor:
        return _rounded_geometric(length, ceil)[p["ratio"], p["a"]]

    return _table_family(
        name, 3, "exact",
        f"{rounding}(a r^t), the exact geometric term rounded (not rounded step by step), with "
        "r = GEOMETRIC_RATIOS[ratio] in 1/2, 2/3, 3/4, 4/5, 5/4, 4/3, 3/2 (uniform among the "
        "ratios with some start in range at this length: at L = 17 not 3/2), start a uniform "
        "in 1..the largest keeping every term <= 255 (255 for r < 1; 7 for 5/4 at L = 17).",
        lambda length: _start_table(_rounded_geometric(length, ceil)),
        ("ratio",), terms, fixed_after=3,
    )  # fmt: skip


@functools.cache
def _signs(length: int) -> torch.Tensor:
    t = _positions(length)
    return torch.stack([1 - 2 * ((t + k) % 2) for k in range(2)])  # (2, L): k = 0: +, -, ...


def _alternating_sign_terms(p: Params, length: int) -> torch.Tensor:
    return 128 + _signs(length)[p["k"]] * (_col(p["a"]) + _arith_shape(p, length))


@functools.cache
def _orbits(length: int, rule: str) -> torch.Tensor:
    """The sequence of a rule on 0..255 from every start: ``(256, L)`` for an order-1 rule,
    ``(256 * 256, L)`` (row ``256 x_0 + x_1``, uint8 to keep it at 64 KiB per term) for an
    order-2 one. The rules are modulo 256, so their orbits stay in 0..255."""
    if rule == "parity":
        x = [torch.arange(VOCAB)]
        for _ in range(1, length):
            prev = x[-1]
            x.append(torch.where(prev % 2 == 0, prev + 1, 2 * prev) % VOCAB)
        return torch.stack(x, 1)
    if rule == "switch":
        start = torch.arange(VOCAB * VOCAB)
        x = [start // VOCAB, start % VOCAB]
        for _ in range(2, length):
            prev, cur = x[-2], x[-1]
            x.append(torch.where(cur > prev, cur - prev, (cur + prev) % VOCAB))
        return torch.stack(x[:length], 1).to(torch.uint8)
    raise ValueError(f"unknown rule {rule!r}")


def _parity_rule_terms(p: Params, length: int) -> torch.Tensor:
    return _orbits(length, "parity")[p["a"]]


def _switch_rule_terms(p: Params, length: int) -> torch.Tensor:
    return _orbits(length, "switch")[p["x0"] * VOCAB + p["x1"]].long()


PHASE_3 = [
    _table_family(
        "fibonacci_mod", 3, "exact",
        "Fibonacci mod m: x_t = (x_{t-1} + x_{t-2}) mod m (e.g. mod 3: 0, 1, 1, 2, 0, 2, 2, 1) "
        "with m in 2..10, start pair (x_0, x_1) uniform in 0..m-1 but not (0, 0): every "
        "window of the Pisano cycle is equally likely.",
        _fibonacci_mod_table, ("m",), _fibonacci_mod_terms, start="j",
        finish=_fibonacci_mod_finish, fixed_after=6, initial=0,  # its terms are all small
    ),
    _offset_family(
        "double_every_third", 3,
        "An arithmetic sequence a + d s t (s in 1..8, direction d = +1 or -1, all terms in "
        "0..127) with every third term doubled: those with (t + k) % 3 == 2, offset k in 0..2 "
        "(k = 0 doubles the 3rd, 6th, ...). Terms stay in 0..254.",
        {"s": range(1, 9), "d": UP_DOWN, "k": range(3)}, _arith_shape,
        terms=_double_every_third_terms, top=127, fixed_after=2,
    ),
    _rounded_geometric_family("floor_geometric", ceil=False),
    _rounded_geometric_family("ceil_geometric", ceil=True),
    _offset_family(
        "alternating_sign_arithmetic", 3,
        "128 + (-1)^(t+k) (a + d s t): an arithmetic sequence in 0..127 (s in 1..8, direction "
        "d = +1 or -1) with alternating signs, shifted into 1..255; k in 0..1 is the sign of "
        "the first term (k = 0: +).",
        {"s": range(1, 9), "d": UP_DOWN, "k": range(2)}, _arith_shape,
        terms=_alternating_sign_terms, top=127, fixed_after=2, initial=0,  # around 128
    ),
    _table_family(
        "parity_rule", 3, "mod256",
        "x_{t+1} = x_t + 1 if x_t is even, else 2 x_t, mod 256 (e.g. 1, 2, 3, 6, 7, 14), start "
        "a in 0..255. Every orbit reaches the cycle 254, 255 within 16 steps.",
        lambda length: _with_start(_grid({}, None), 0, VOCAB), (), _parity_rule_terms,
        fixed_after=1,
    ),
    _table_family(
        "switch_rule", 3, "mod256",
        "Two rules switched by the last step: if it rose (x_t > x_{t-1}) the next term is the "
        "difference x_t - x_{t-1}, else the sum x_t + x_{t-1} mod 256 (e.g. 3, 5, 2, 7, 5, 12, "
        "7, 19: sums and differences interleave until a sum wraps around). x_0, x_1 in "
        "0..255.",
        lambda length: _with_start(_grid({"x0": range(VOCAB)}, None), 0, VOCAB), ("x0",),
        _switch_rule_terms, start="x1", fixed_after=2, initial=2,
    ),
]  # fmt: skip


FAMILIES: dict[str, Family] = {f.name: f for f in PHASE_1 + PHASE_2 + PHASE_3}
PHASES: dict[int, list[str]] = {
    p: [n for n, f in FAMILIES.items() if f.phase == p] for p in (1, 2, 3)
}
