"""A small SUBLEQ assembler: source text -> machine words (the library is programs.py).

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

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from lit_loops.checks import check, fail
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


def __getattr__(name: str):
    # The library used to live here: ``assembler.PROGRAMS`` (tests/test_bad_input.py) still
    # resolves, lazily, since programs.py imports this module. New code imports programs.py.
    if name == "PROGRAMS":
        from lit_loops.experiments.subleq.programs import PROGRAMS

        return PROGRAMS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
