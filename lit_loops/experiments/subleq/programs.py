"""The SUBLEQ program library: each program's source, the inputs it is correct for and the
words it must leave after halting (``PROGRAMS``), and ``program_inputs``, the one place that
draws a program's inputs (every valid input, or a uniform sample beyond ``max_inputs``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from lit_loops.checks import check_int
from lit_loops.experiments.subleq.assembler import Parsed, Program, assemble, parse
from lit_loops.experiments.subleq.machine import MachineSpec


def _wrap(x: int, N: int) -> int:
    half = 1 << (N - 1)
    return (x + half) % (1 << N) - half


@dataclass(frozen=True)
class ProgramSpec:
    """A library program.

    Attributes:
        name: its key in ``PROGRAMS``.
        description: what it computes.
        source: assembler text.
        inputs: ``{word: (low, high)}`` for bits ``N``: the inputs it is correct for.
        expected: ``(inputs, N) -> {word: value}``, the words to check after it halts.
        max_steps: ``N -> steps`` enough for every valid input to halt.
    """

    name: str
    description: str
    source: str
    inputs: Callable[[int], dict[str, tuple[int, int]]]
    expected: Callable[[dict[str, int], int], dict[str, int]]
    max_steps: Callable[[int], int]

    @property
    def parsed(self) -> Parsed:
        return parse(self.source)

    @property
    def min_m(self) -> int:
        return self.parsed.min_m

    @property
    def min_instructions(self) -> int:
        return self.parsed.min_instructions

    def assemble(self, spec: MachineSpec) -> Program:
        return assemble(spec, self.source)

    def fits(self, spec: MachineSpec) -> bool:
        """Whether the program assembles for ``spec`` (words, constants and slots fit)."""
        try:
            self.assemble(spec)
        except ValueError:
            return False
        return True

    def num_inputs(self, N: int) -> int:
        """How many valid input combinations there are for bits ``N``."""
        return math.prod(hi - lo + 1 for lo, hi in self.inputs(N).values())

    def input_grid(self, N: int) -> dict[str, torch.Tensor]:
        """Every valid input combination: ``{word: (K,) long}`` (see ``program_inputs``)."""
        ranges = self.inputs(N)
        combos = list(itertools.product(*(range(lo, hi + 1) for lo, hi in ranges.values())))
        table = torch.tensor(combos, dtype=torch.long).reshape(len(combos), len(ranges))
        return {name: table[:, i] for i, name in enumerate(ranges)}

    def expected_tensors(
        self, inputs: Mapping[str, torch.Tensor], N: int
    ) -> dict[str, torch.Tensor]:
        """``expected`` over a batch: ``{word: (B,) long}``."""
        B = next(iter(inputs.values())).numel() if inputs else 1
        rows = [self.expected({k: int(v[i]) for k, v in inputs.items()}, N) for i in range(B)]
        return {k: torch.tensor([r[k] for r in rows], dtype=torch.long) for k in rows[0]}


def _full(N: int) -> tuple[int, int]:
    return (-(1 << (N - 1)), (1 << (N - 1)) - 1)


def _count(N: int) -> tuple[int, int]:
    return (0, (1 << (N - 1)) - 1)


ADD = """
# B = A + B
.word A 0
.word B 0
        subleq A Z      # Z = -A
        subleq Z B      # B = B - (-A)
        subleq Z Z      # Z = 0
        halt
"""

SUBTRACT = """
# B = B - A
.word A 0
.word B 0
        subleq A B
        halt
"""

NEGATE = """
# R = -X
.word X 0
.word R 0
        subleq R R      # R = 0
        subleq X R      # R = -X
        halt
"""

COPY = """
# R = X (X unchanged)
.word X 0
.word R 0
        subleq R R      # R = 0
        subleq X Z      # Z = -X
        subleq Z R      # R = X
        subleq Z Z      # Z = 0
        halt
"""

MULTIPLY = """
# P = A * B by B repeated additions, B >= 0 (mod 2^N). No zero word: the counter lives in
# P, -A * B accumulates in B, and the halt clears B.
.word A 0
.word B 0
.word P 0
.word M1 -1
        subleq B P              # P = -B: the loop counter, counts up to 1
        subleq B B test         # B = 0 (accumulates -A * k); jump to the test
body:   subleq A B              # B -= A
test:   subleq M1 P body        # P += 1; while P <= 0 (B times) repeat the body
        subleq P P              # P = 0
        subleq B P              # P = -B = A * B
        halt B
"""

COUNTDOWN = """
# while X > 0: X -= 1; K += 1   (so K = max(X, 0) and X ends at min(X, 0))
.word X 0
.word K 0
.word ONE 1
.word Z 0
loop:   subleq Z X done         # if X <= 0 goto done (X unchanged: Z = 0)
        subleq ONE X            # X -= 1
        subleq ONE Z            # Z = -1
        subleq Z K              # K += 1
        subleq Z Z loop         # Z = 0; goto loop
done:   halt
"""

FIBONACCI = """
# x(k+1) = x(k) + x(k-1) from A = x0, B = x1: A = x4, B = x5 (0, 1 -> 3, 5). T holds the odd
# terms negated so that each term is one subleq.
.word A 0
.word B 1
.word T 0
        subleq B T              # T = -x1
        subleq T A              # A = x0 + x1 = x2
        subleq A T              # T = -(x1 + x2) = -x3
        subleq T A              # A = x2 + x3 = x4
        subleq A T              # T = -(x3 + x4) = -x5
        subleq B B              # B = 0
        subleq T B              # B = x5
        halt T
"""

FIBONACCI_LOOP = """
# A = F(2K), B = F(2K+1) by K loop passes of two terms each, from A = F(0) = 0, B = F(1) = 1
.word K 0
.word A 0
.word B 1
.word ONE 1
loop:   subleq Z K done         # if K <= 0 goto done
        subleq ONE K            # K -= 1
        subleq B Z              # Z = -B
        subleq Z A              # A = A + B
        subleq Z Z              # Z = 0
        subleq A Z              # Z = -A
        subleq Z B              # B = B + A
        subleq Z Z loop         # Z = 0; goto loop
done:   halt
"""


def _fib(k: int, x0: int = 0, x1: int = 1) -> int:
    a, b = x0, x1
    for _ in range(k):
        a, b = b, a + b
    return a


PROGRAMS: dict[str, ProgramSpec] = {
    p.name: p
    for p in [
        ProgramSpec(
            "add",
            "B = A + B (mod 2^N)",
            ADD,
            inputs=lambda N: {"A": _full(N), "B": _full(N)},
            expected=lambda x, N: {"B": _wrap(x["A"] + x["B"], N), "A": x["A"], "Z": 0},
            max_steps=lambda N: 8,
        ),
        ProgramSpec(
            "subtract",
            "B = B - A (mod 2^N)",
            SUBTRACT,
            inputs=lambda N: {"A": _full(N), "B": _full(N)},
            expected=lambda x, N: {"B": _wrap(x["B"] - x["A"], N), "A": x["A"]},
            max_steps=lambda N: 4,
        ),
        ProgramSpec(
            "negate",
            "R = -X (mod 2^N: -(-2^(N-1)) wraps to itself)",
            NEGATE,
            inputs=lambda N: {"X": _full(N), "R": _full(N)},
            expected=lambda x, N: {"R": _wrap(-x["X"], N), "X": x["X"]},
            max_steps=lambda N: 6,
        ),
        ProgramSpec(
            "copy",
            "R = X",
            COPY,
            inputs=lambda N: {"X": _full(N), "R": _full(N)},
            expected=lambda x, N: {"R": x["X"], "X": x["X"], "Z": 0},
            max_steps=lambda N: 8,
        ),
        ProgramSpec(
            "multiply",
            "P = A * B (mod 2^N) by repeated addition, 0 <= B",
            MULTIPLY,
            inputs=lambda N: {"A": _full(N), "B": _count(N)},
            expected=lambda x, N: {"P": _wrap(x["A"] * x["B"], N), "A": x["A"], "B": 0},
            max_steps=lambda N: 2 * _count(N)[1] + 10,
        ),
        ProgramSpec(
            "countdown",
            "X counts down to 0, K counts the passes: K = max(X, 0), X = min(X, 0)",
            COUNTDOWN,
            inputs=lambda N: {"X": _full(N)},
            expected=lambda x, N: {"K": max(x["X"], 0), "X": min(x["X"], 0), "Z": 0},
            max_steps=lambda N: 5 * _full(N)[1] + 4,
        ),
        ProgramSpec(
            "fibonacci",
            "five Fibonacci terms from A = x0, B = x1: A = x4, B = x5 (0, 1 -> 3, 5; mod 2^N)",
            FIBONACCI,
            inputs=lambda N: {"A": _full(N), "B": _full(N)},
            expected=lambda x, N: {
                "A": _wrap(_fib(4, x["A"], x["B"]), N),
                "B": _wrap(_fib(5, x["A"], x["B"]), N),
            },
            max_steps=lambda N: 10,
        ),
        ProgramSpec(
            "fibonacci_loop",
            "A = F(2K), B = F(2K+1) (mod 2^N) by a loop, K >= 0; needs m >= 5, 9 slots",
            FIBONACCI_LOOP,
            inputs=lambda N: {"K": _count(N)},
            expected=lambda x, N: {
                "A": _wrap(_fib(2 * x["K"]), N),
                "B": _wrap(_fib(2 * x["K"] + 1), N),
                "K": 0,
            },
            max_steps=lambda N: 8 * _count(N)[1] + 4,
        ),
    ]
}


def programs_that_fit(spec: MachineSpec) -> dict[str, ProgramSpec]:
    """The library programs that assemble for ``spec``."""
    return {name: p for name, p in PROGRAMS.items() if p.fits(spec)}


def program_inputs(
    program: ProgramSpec,
    N: int,
    max_inputs: int | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Inputs to run ``program`` on, ``{word: (K,) long}``: every valid input combination
    when there are at most ``max_inputs`` of them (or ``max_inputs`` is None), else
    ``max_inputs`` drawn uniformly with replacement from ``generator``, one
    ``torch.randint`` per word in the order of ``program.inputs(N)``.

    The one place program inputs are drawn: the training traces (``data.py``), the
    rollout validation (``rollout.py``), ``scripts/subleq_rollout.py`` and the tests call
    it, the first three with one generator passed through the library in order."""
    if max_inputs is not None:
        check_int("max_inputs", max_inputs, min_value=1)
    if max_inputs is None or program.num_inputs(N) <= max_inputs:
        return program.input_grid(N)
    return {
        name: torch.randint(lo, hi + 1, (max_inputs,), generator=generator)
        for name, (lo, hi) in program.inputs(N).items()
    }
