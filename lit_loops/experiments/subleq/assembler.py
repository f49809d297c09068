"""A small SUBLEQ assembler and a library of programs.

Syntax, one statement per line, ``#`` starts a comment::

    .word NAME VALUE        a data word (memory tokens in order of declaration)
    label:                  labels the next instruction (may share its line)
    subleq A B C            mem[B] -= mem[A]; if mem[B] <= 0 goto C
    A B C                   the same, without the mnemonic
    subleq A B              C omitted: the next instruction (either way)
    halt                    subleq Z Z here: Z is the zero word, allocated if not declared
    halt W                  subleq W W here: clears W, then stays (W must not be an output)

``A`` and ``B`` name data words; ``C`` is a label or ``here`` (the instruction itself).
``Z`` is the zero word: a program may declare it (``.word Z 0``) or just use it, and it is
then allocated after the declared words. Instruction slots the program does not use hold
its last ``halt`` (or ``halt`` with ``Z`` if it has none), so running into them halts. The
PC starts at the first instruction; after the last instruction slot comes the first.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from lit_loops.checks import check, check_int, fail
from lit_loops.experiments.subleq.machine import MachineSpec, State

ZERO_WORD = "Z"
HERE = "here"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_RESERVED = {"subleq", "halt", HERE, ".word"}


@dataclass(frozen=True)
class _Instruction:
    a: str
    b: str
    c: str | None  # a label, HERE, or None (the next instruction)
    line: int


@dataclass(frozen=True)
class Parsed:
    """A parsed program, independent of the machine.

    Attributes:
        words: ``{name: initial value}`` in order of declaration, the zero word last when it
            is allocated automatically.
        instructions: the instructions in order (halts expanded).
        labels: ``{label: instruction index}`` (an index equal to ``len(instructions)``
            labels the first free slot).
        filler_word: the word of the halt that fills unused instruction slots.
    """

    words: dict[str, int]
    instructions: tuple[_Instruction, ...]
    labels: dict[str, int]
    filler_word: str

    @property
    def min_m(self) -> int:
        """Memory words the program needs (the automatic zero word included)."""
        return len(self.words)

    @property
    def min_instructions(self) -> int:
        """Instruction slots the program needs (one more if a label ends the program)."""
        end_label = any(i == len(self.instructions) for i in self.labels.values())
        return len(self.instructions) + int(end_label)


def _check_name(name: str, line: int, what: str) -> None:
    check(
        bool(_NAME.match(name)) and name.lower() not in _RESERVED,
        f"line {line}: {what}",
        name,
        "must be an identifier ([A-Za-z_][A-Za-z0-9_]*) and not subleq, halt or here",
    )


def parse(text: str) -> Parsed:
    """Parse assembler ``text`` (see the module docstring); raises ``ValueError`` on errors."""
    words: dict[str, int] = {}
    instructions: list[_Instruction] = []
    labels: dict[str, int] = {}
    halt_words: list[str] = []
    for k, raw in enumerate(text.splitlines(), start=1):
        tokens = raw.split("#", 1)[0].replace(",", " ").split()
        while tokens and tokens[0].endswith(":"):  # labels
            label = tokens.pop(0)[:-1]
            _check_name(label, k, "label")
            check(label not in labels, f"line {k}: label", label, "is defined twice")
            labels[label] = len(instructions)
        if not tokens:
            continue
        op = tokens[0].lower()
        if op == ".word":
            check(len(tokens) == 3, f"line {k}", raw.strip(), "expected '.word NAME VALUE'")
            name = tokens[1]
            _check_name(name, k, "word")
            check(name not in words, f"line {k}: word", name, "is declared twice")
            try:
                value = int(tokens[2], 0)
            except ValueError:
                fail(f"line {k}: .word {name}", tokens[2], "must be an integer")
            words[name] = value
            continue
        if op == "halt":
            check(len(tokens) <= 2, f"line {k}", raw.strip(), "expected 'halt' or 'halt WORD'")
            w = tokens[1] if len(tokens) == 2 else ZERO_WORD
            halt_words.append(w)
            instructions.append(_Instruction(w, w, HERE, k))
            continue
        if op == "subleq":
            tokens = tokens[1:]
        check(
            len(tokens) in (2, 3),
            f"line {k}",
            raw.strip(),
            "expected 'subleq A B [C]', 'A B [C]', 'halt [W]', '.word NAME VALUE' or 'label:'",
        )
        instructions.append(
            _Instruction(tokens[0], tokens[1], tokens[2] if len(tokens) == 3 else None, k)
        )
    filler = halt_words[-1] if halt_words else ZERO_WORD

    # Resolve names: words (the zero word is allocated on use) and labels.
    used_zero = filler == ZERO_WORD or any(ZERO_WORD in (i.a, i.b) for i in instructions)
    if used_zero and ZERO_WORD not in words:
        words[ZERO_WORD] = 0
    check(
        words.get(ZERO_WORD, 0) == 0,
        f".word {ZERO_WORD}",
        words.get(ZERO_WORD),
        f"{ZERO_WORD} is the zero word (halt uses it): its value must be 0",
    )
    clash = sorted(set(words) & set(labels))
    check(not clash, "names", clash, "are both words and labels; rename one")
    for inst in instructions:
        for w in (inst.a, inst.b):
            check(
                w in words, f"line {inst.line}: word", w, f"is not declared; words: {list(words)}"
            )
        if inst.c is not None and inst.c != HERE:
            check(
                inst.c in labels,
                f"line {inst.line}: label",
                inst.c,
                f"is not defined; labels: {list(labels)}",
            )
    return Parsed(words, tuple(instructions), labels, filler)


@dataclass
class Program:
    """An assembled program.

    Attributes:
        spec: the machine.
        state: its initial state, a batch of 1.
        symbols: ``{word: absolute memory token index}``.
        labels: ``{label: absolute instruction token index}``.
        parsed: the parsed source.
    """

    spec: MachineSpec
    state: State
    symbols: dict[str, int]
    labels: dict[str, int]
    parsed: Parsed = field(repr=False)

    def initial_state(self, values: Mapping[str, int | torch.Tensor] | None = None) -> State:
        """The initial state with some words set: ``values`` maps a word to an int or to a
        ``(B,)`` tensor (one value per batch element). Returns a batch of ``B`` (1 if all
        values are ints)."""
        values = dict(values or {})
        sizes = {v.numel() for v in values.values() if isinstance(v, torch.Tensor)}
        check(len(sizes) <= 1, "values", values, "tensors must all have the same length")
        B = sizes.pop() if sizes else 1
        mem = self.state.mem.expand(B, -1).clone()
        for name, value in values.items():
            check(name in self.symbols, "word", name, f"must be one of {list(self.symbols)}")
            v = torch.as_tensor(value, dtype=torch.long).reshape(-1)
            bad = (v < self.spec.value_min) | (v > self.spec.value_max)
            if bool(bad.any()):
                fail(
                    f"word {name}",
                    v[bad][0].item(),
                    f"must fit in N={self.spec.N} bits signed: "
                    f"[{self.spec.value_min}, {self.spec.value_max}]",
                )
            mem[:, self.symbols[name] - self.spec.s] = v
        return State(
            mem, self.state.inst.expand(B, -1, -1).clone(), self.state.pc.expand(B).clone()
        )

    def read(self, state: State, name: str) -> torch.Tensor:
        """``(B,)`` long: the value of word ``name`` in ``state``."""
        check(name in self.symbols, "word", name, f"must be one of {list(self.symbols)}")
        return state.mem[:, self.symbols[name] - self.spec.s]


def assemble(spec: MachineSpec, text: str) -> Program:
    """Assemble ``text`` for machine ``spec``: words in memory tokens ``s, s+1, ...`` in order
    of declaration (unused ones 0), instructions from token ``s+m`` on, unused slots filled
    with the halt, the PC at the first instruction. Raises ``ValueError`` when the program
    does not fit."""
    parsed = parse(text)
    s, m, n_inst = spec.s, spec.m, spec.num_instructions
    names = list(parsed.words)
    check(
        len(names) <= m,
        "words",
        names,
        f"{len(names)} data words do not fit in the machine's m={m} memory tokens",
    )
    for name, value in parsed.words.items():
        check(
            spec.value_min <= value <= spec.value_max,
            f".word {name}",
            value,
            f"must fit in N={spec.N} bits signed: [{spec.value_min}, {spec.value_max}]",
        )
    check(
        parsed.min_instructions <= n_inst,
        "instructions",
        parsed.min_instructions,
        f"the program needs {parsed.min_instructions} instruction slots, the machine has "
        f"n - s - m = {n_inst}",
    )
    symbols = {name: s + i for i, name in enumerate(names)}
    labels = {label: spec.inst_start + i for label, i in parsed.labels.items()}
    mem = torch.zeros(1, m, dtype=torch.long)
    for name, value in parsed.words.items():
        mem[0, symbols[name] - s] = value
    inst = torch.empty(1, n_inst, 3, dtype=torch.long)
    for i in range(n_inst):
        here = spec.inst_start + i
        if i < len(parsed.instructions):
            x = parsed.instructions[i]
            if x.c is None:
                c = spec.inst_start + (i + 1) % n_inst
            elif x.c == HERE:
                c = here
            else:
                c = labels[x.c]
            inst[0, i] = torch.tensor([symbols[x.a], symbols[x.b], c])
        else:
            w = symbols[parsed.filler_word]
            inst[0, i] = torch.tensor([w, w, here])
    state = State(mem, inst, torch.tensor([spec.inst_start]))
    return Program(spec, state, symbols, labels, parsed)


# --- the program library ------------------------------------------------------------------
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

    def input_grid(self, N: int) -> dict[str, torch.Tensor]:
        """Every valid input combination: ``{word: (K,) long}``."""
        ranges = self.inputs(N)
        combos = list(itertools.product(*(range(lo, hi + 1) for lo, hi in ranges.values())))
        table = torch.tensor(combos, dtype=torch.long).reshape(len(combos), len(ranges))
        return {name: table[:, i] for i, name in enumerate(ranges)}

    def sample_inputs(
        self, N: int, batch: int, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """``batch`` valid inputs drawn uniformly: ``{word: (batch,) long}``."""
        check_int("batch", batch, min_value=1)
        return {
            name: torch.randint(lo, hi + 1, (batch,), generator=generator)
            for name, (lo, hi) in self.inputs(N).items()
        }

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
