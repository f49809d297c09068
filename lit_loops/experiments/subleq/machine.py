"""The SUBLEQ machine: its size, batched states, the simulator and the bit-matrix encoding.

Semantics (a public contract). ``SUBLEQ(a, b, c)``::

    mem[b] = mem[b] - mem[a]        (N-bit two's complement, wraps mod 2^N)
    PC = c if mem[b] <= 0 else next (the stored, wrapped value is tested)

"next" after the last instruction token is the first instruction token (the program is a
ring). A state whose step changes nothing is halted: ``SUBLEQ(z, z, here)`` with
``mem[z] = 0`` is the usual halt; rollouts stop at that fixed point.

Token layout of a machine with ``n`` tokens (``n`` a power of two)::

    0 .. s-1        scratchpad (token 0 holds the PC)
    s .. s+m-1      memory, one N-bit integer each
    s+m .. n-1      instructions (a, b, c)

``a`` and ``b`` are absolute indices of memory tokens, ``c`` and the PC absolute indices of
instruction tokens.

Bit-matrix encoding: a state is an ``(n, d)`` matrix, ``d = 5 log n + 3 N + 1``, bit 0 as
``-scale`` and bit 1 as ``+scale``. The feature columns of every token, in order, each
field MSB first::

    position     log n   the token's index
    scratchpad   1       1 on scratchpad tokens
    memory       N       the value, two's complement (memory tokens only)
    instruction  3 log n a, b, c (instruction tokens only)
    work         2 N     scratchpad work area, 0 in every input (not in the loss)
    pc           log n   the PC (scratchpad token 0 only)

A field that does not apply to a token holds bit 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lit_loops.checks import check, check_float, check_int, fail

FIELDS = ("position", "scratchpad", "memory", "instruction", "work", "pc")


@dataclass(frozen=True)
class MachineSpec:
    """The size of a SUBLEQ machine.

    Args:
        n: tokens, a power of two >= 4.
        s: scratchpad tokens, >= 1 (token 0 holds the PC).
        m: memory tokens (data words), >= 1.
        N: bits per integer, >= 2.
        scale: the encoding writes bit 1 as ``+scale`` and bit 0 as ``-scale``.

    The remaining ``n - s - m`` tokens (at least 1) hold instructions.
    """

    n: int = 16
    s: int = 4
    m: int = 4
    N: int = 4
    scale: float = 1.0

    def __post_init__(self) -> None:
        check_int("n", self.n, min_value=4)
        check(self.n & (self.n - 1) == 0, "n", self.n, "must be a power of two >= 4")
        check_int("s", self.s, min_value=1)
        check_int("m", self.m, min_value=1)
        check(
            self.s + self.m <= self.n - 1,
            "m",
            self.m,
            f"must leave at least 1 instruction token: s + m <= n - 1 = {self.n - 1} (s={self.s})",
        )
        check_int("N", self.N, min_value=2, max_value=62)
        check_float("scale", self.scale, low=0.0, low_inclusive=False)

    # --- sizes --------------------------------------------------------------------------
    @property
    def log_n(self) -> int:
        return self.n.bit_length() - 1

    @property
    def num_instructions(self) -> int:
        return self.n - self.s - self.m

    @property
    def d(self) -> int:
        return 5 * self.log_n + 3 * self.N + 1

    @property
    def inst_start(self) -> int:
        """Absolute index of the first instruction token, ``s + m``."""
        return self.s + self.m

    @property
    def memory_tokens(self) -> slice:
        return slice(self.s, self.s + self.m)

    @property
    def instruction_tokens(self) -> slice:
        return slice(self.s + self.m, self.n)

    @property
    def value_min(self) -> int:
        return -(1 << (self.N - 1))

    @property
    def value_max(self) -> int:
        return (1 << (self.N - 1)) - 1

    @property
    def field_slices(self) -> dict[str, slice]:
        """Feature columns of each field, ``{name: slice}`` in the order of ``FIELDS``."""
        widths = {
            "position": self.log_n,
            "scratchpad": 1,
            "memory": self.N,
            "instruction": 3 * self.log_n,
            "work": 2 * self.N,
            "pc": self.log_n,
        }
        out, start = {}, 0
        for name in FIELDS:
            out[name] = slice(start, start + widths[name])
            start += widths[name]
        return out

    def wrap(self, x: torch.Tensor) -> torch.Tensor:
        """Integers -> their N-bit two's complement value in ``[value_min, value_max]``."""
        half = 1 << (self.N - 1)
        return torch.remainder(x + half, 1 << self.N) - half


@dataclass
class State:
    """A batch of machine states in integer form.

    Attributes:
        mem: ``(B, m)`` long, signed values in ``[-2^(N-1), 2^(N-1) - 1]``.
        inst: ``(B, n - s - m, 3)`` long, absolute token indices ``(a, b, c)``.
        pc: ``(B,)`` long, absolute index of the current instruction token.
    """

    mem: torch.Tensor
    inst: torch.Tensor
    pc: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.pc.shape[0]

    def clone(self) -> State:
        return State(self.mem.clone(), self.inst.clone(), self.pc.clone())

    def to(self, device: torch.device | str) -> State:
        return State(self.mem.to(device), self.inst.to(device), self.pc.to(device))

    def __getitem__(self, index) -> State:
        """Select batch elements (an int keeps a batch of 1)."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return State(self.mem[index], self.inst[index], self.pc[index])

    def equal(self, other: State) -> torch.Tensor:
        """``(B,) bool``: True where the two states are identical."""
        return (
            (self.mem == other.mem).all(1)
            & (self.inst == other.inst).flatten(1).all(1)
            & (self.pc == other.pc)
        )

    @staticmethod
    def cat(states: list[State]) -> State:
        """Concatenate batches."""
        return State(
            torch.cat([x.mem for x in states]),
            torch.cat([x.inst for x in states]),
            torch.cat([x.pc for x in states]),
        )


def check_state(spec: MachineSpec, state: State) -> None:
    """Raise ``ValueError`` unless ``state`` is a valid batch of states of ``spec``."""
    B = state.pc.shape[0] if state.pc.dim() == 1 else -1
    check(state.pc.dim() == 1, "state.pc.shape", tuple(state.pc.shape), "must be (B,)")
    check(
        tuple(state.mem.shape) == (B, spec.m),
        "state.mem.shape",
        tuple(state.mem.shape),
        f"must be (B, m) = ({B}, {spec.m})",
    )
    check(
        tuple(state.inst.shape) == (B, spec.num_instructions, 3),
        "state.inst.shape",
        tuple(state.inst.shape),
        f"must be (B, n - s - m, 3) = ({B}, {spec.num_instructions}, 3)",
    )
    for name in ("mem", "inst", "pc"):
        t = getattr(state, name)
        check(not t.is_floating_point(), f"state.{name}.dtype", t.dtype, "must be an integer type")

    def in_range(name: str, t: torch.Tensor, lo: int, hi: int, what: str) -> None:
        bad = (t < lo) | (t > hi)
        if t.numel() and bool(bad.any()):
            fail(name, t[bad][0].item(), f"{what}: must be in [{lo}, {hi}]")

    in_range("state.mem", state.mem, spec.value_min, spec.value_max, f"N={spec.N} bits signed")
    last_mem = spec.s + spec.m - 1
    in_range("state.inst a", state.inst[..., 0], spec.s, last_mem, "a memory token")
    in_range("state.inst b", state.inst[..., 1], spec.s, last_mem, "a memory token")
    in_range(
        "state.inst c", state.inst[..., 2], spec.inst_start, spec.n - 1, "an instruction token"
    )
    in_range("state.pc", state.pc, spec.inst_start, spec.n - 1, "an instruction token")


# --- the simulator ----------------------------------------------------------------------
def current_instruction(spec: MachineSpec, state: State) -> torch.Tensor:
    """``(B, 3)`` long: the absolute ``(a, b, c)`` of the instruction the PC points at."""
    rows = torch.arange(state.batch_size, device=state.pc.device)
    return state.inst[rows, state.pc - spec.inst_start]


def step(spec: MachineSpec, state: State, validate: bool = True) -> State:
    """One SUBLEQ step of every batch element; returns a new ``State``.

    ``validate`` checks ranges first (a host sync); ``run`` checks once, then skips it.
    """
    if validate:
        check_state(spec, state)
    rows = torch.arange(state.batch_size, device=state.pc.device)
    a, b, c = current_instruction(spec, state).unbind(-1)  # (B,) each
    new_b = spec.wrap(state.mem[rows, b - spec.s] - state.mem[rows, a - spec.s])  # (B,)
    mem = state.mem.clone()
    mem[rows, b - spec.s] = new_b
    following = spec.inst_start + (state.pc - spec.inst_start + 1) % spec.num_instructions
    pc = torch.where(new_b <= 0, c, following)
    return State(mem, state.inst, pc)


def is_halted(spec: MachineSpec, state: State) -> torch.Tensor:
    """``(B,) bool``: True where ``step`` changes nothing (the state is a fixed point)."""
    return step(spec, state).equal(state)


@dataclass
class Trace:
    """A simulator rollout.

    Attributes:
        states: ``states[t]`` is the batch after ``t`` steps; ``states[0]`` is the input.
            Elements that halted keep their state. The list ends when every element has
            halted or after ``max_steps`` steps.
        steps: ``(B,)`` long, the steps each element took before reaching its fixed point
            (steps that changed something).
        halted: ``(B,)`` bool, whether the element's final state is a fixed point.
    """

    states: list[State]
    steps: torch.Tensor
    halted: torch.Tensor

    @property
    def final(self) -> State:
        return self.states[-1]


def run(spec: MachineSpec, state: State, max_steps: int) -> Trace:
    """Roll the simulator out for up to ``max_steps`` steps, stopping at fixed points."""
    check_int("max_steps", max_steps, min_value=0)
    check_state(spec, state)
    states = [state]
    steps = torch.zeros(state.batch_size, dtype=torch.long, device=state.pc.device)
    current = state
    for _ in range(max_steps):
        nxt = step(spec, current, validate=False)
        moved = ~nxt.equal(current)
        if not bool(moved.any()):
            break
        steps += moved.long()
        states.append(nxt)
        current = nxt
    halted = step(spec, current, validate=False).equal(current)
    return Trace(states, steps, halted)


def random_states(
    spec: MachineSpec,
    batch: int,
    generator: torch.Generator | None = None,
    branch_boundary_fraction: float = 0.0,
    value_bits: int | None = None,
    instructions: int | None = None,
) -> State:
    """``batch`` random states: memory uniform over the N-bit range, ``a`` and ``b`` uniform
    over memory tokens, ``c`` and the PC uniform over instruction tokens.

    In a ``branch_boundary_fraction`` of the samples (each independently) ``mem[a]`` of the
    current instruction is set to ``mem[b] + delta`` (wrapped), ``delta`` uniform in
    ``{-1, 0, 1}``, so ``mem[b] - mem[a]`` is -1, 0 or 1: the branch test is on its boundary.
    Tensors are made on the generator's device (the CPU by default).

    Two restrictions, for training curricula (None, the default, is the full machine):

    - ``value_bits`` ``k`` in ``[1, N]``: memory words are drawn uniformly from the ``k``-bit
      signed range ``[-2^(k-1), 2^(k-1) - 1]`` (still stored as N-bit words). A branch
      boundary's ``mem[b] + delta`` is clamped to that range when ``k < N`` (so at its two
      ends ``delta`` becomes 0: the difference is still in ``{-1, 0, 1}``); with ``k = N``
      it wraps as without the argument.
    - ``instructions`` ``k`` in ``[1, n - s - m]``: the PC and every instruction's jump
      target ``c`` are drawn among the first ``k`` instruction tokens only: a program of
      ``k`` instructions. The other instruction tokens still hold random instructions
      (their ``c`` too among the first ``k``), which the state's step does not execute.
      The ring of "next" is still the whole machine's: falling through the ``k``-th
      instruction leads to the ``k+1``-th, so one step later the PC is among the first
      ``k + 1`` (a longer rollout may go on into the rest).

    Neither changes the number or order of the generator's draws, only their ranges: with
    ``value_bits = N`` and ``instructions = n - s - m`` (or None) the states are exactly
    those drawn without the arguments, for the same generator.
    """
    check_int("batch", batch, min_value=0)
    check_float("branch_boundary_fraction", branch_boundary_fraction, 0.0, 1.0)
    if value_bits is not None:
        check_int("value_bits", value_bits, min_value=1, max_value=spec.N)
    if instructions is not None:
        check_int("instructions", instructions, min_value=1, max_value=spec.num_instructions)
    bits = spec.N if value_bits is None else value_bits
    k_inst = spec.num_instructions if instructions is None else instructions
    value_min, value_max = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    g = generator
    device = g.device if g is not None else torch.device("cpu")
    kw = {"generator": g, "device": device, "dtype": torch.long}
    n_inst, s, m = spec.num_instructions, spec.s, spec.m
    mem = torch.randint(value_min, value_max + 1, (batch, m), **kw)
    ab = torch.randint(s, s + m, (batch, n_inst, 2), **kw)
    c = torch.randint(spec.inst_start, spec.inst_start + k_inst, (batch, n_inst, 1), **kw)
    pc = torch.randint(spec.inst_start, spec.inst_start + k_inst, (batch,), **kw)
    # Drawn whatever the fraction, so the draws above and below do not depend on it.
    boundary = torch.rand(batch, generator=g, device=device) < branch_boundary_fraction
    delta = torch.randint(-1, 2, (batch,), **kw)
    state = State(mem, torch.cat([ab, c], dim=-1), pc)
    if branch_boundary_fraction > 0:
        rows = torch.arange(batch, device=device)
        a, b, _ = current_instruction(spec, state).unbind(-1)
        target = mem[rows, b - s] + delta
        if bits < spec.N:  # stay in the k-bit range (still on the boundary)
            target = target.clamp(value_min, value_max)
        else:
            target = spec.wrap(target)
        mem[rows[boundary], (a - s)[boundary]] = target[boundary]
    return state


# --- the bit-matrix encoding --------------------------------------------------------------
def to_bits(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Non-negative integers ``(...)`` -> ``(..., bits)`` long in {0, 1}, MSB first."""
    shifts = torch.arange(bits - 1, -1, -1, device=x.device)
    return (x.unsqueeze(-1) >> shifts) & 1


def from_bits(bits: torch.Tensor) -> torch.Tensor:
    """``(..., k)`` bits in {0, 1} (any dtype), MSB first -> ``(...)`` long."""
    k = bits.shape[-1]
    weights = 1 << torch.arange(k - 1, -1, -1, device=bits.device)
    return (bits.long() * weights).sum(-1)


def encode(spec: MachineSpec, state: State, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``State`` (batch B) -> ``(B, n, d)`` matrices of ``±scale`` (see the module docstring)."""
    check_state(spec, state)
    B, device = state.batch_size, state.pc.device
    f = spec.field_slices
    bits = torch.zeros(B, spec.n, spec.d, dtype=torch.long, device=device)
    bits[:, :, f["position"]] = to_bits(torch.arange(spec.n, device=device), spec.log_n)
    bits[:, : spec.s, f["scratchpad"]] = 1
    unsigned = torch.remainder(state.mem, 1 << spec.N)  # two's complement
    bits[:, spec.memory_tokens, f["memory"]] = to_bits(unsigned, spec.N)
    inst_bits = to_bits(state.inst, spec.log_n).flatten(-2)  # (B, I, 3 log n)
    bits[:, spec.instruction_tokens, f["instruction"]] = inst_bits
    bits[:, 0, f["pc"]] = to_bits(state.pc, spec.log_n)
    return (bits.to(dtype) * 2 - 1) * spec.scale


def decode(spec: MachineSpec, x: torch.Tensor) -> State:
    """``(B, n, d)`` -> ``State``, reading each bit by sign (``x > 0`` is bit 1).

    Inverts ``encode`` exactly. Position, scratchpad and work columns, and fields on tokens
    they do not apply to, are ignored. A decoded ``(a, b, c)`` or PC may point at the wrong
    kind of token (when ``x`` is a model's output); ``check_state`` tells.
    """
    check(
        x.dim() == 3 and tuple(x.shape[1:]) == (spec.n, spec.d),
        "x.shape",
        tuple(x.shape),
        f"must be (B, n, d) = (B, {spec.n}, {spec.d})",
    )
    f = spec.field_slices
    bits = x > 0
    unsigned = from_bits(bits[:, spec.memory_tokens, f["memory"]])  # (B, m)
    mem = torch.where(unsigned > spec.value_max, unsigned - (1 << spec.N), unsigned)
    inst_bits = bits[:, spec.instruction_tokens, f["instruction"]]  # (B, I, 3 log n)
    inst = from_bits(inst_bits.unflatten(-1, (3, spec.log_n)))  # (B, I, 3)
    pc = from_bits(bits[:, 0, f["pc"]])  # (B,)
    return State(mem, inst, pc)


def loss_mask(spec: MachineSpec) -> torch.Tensor:
    """``(n, d) bool``: False on the work area (not in the loss or accuracy), True elsewhere."""
    mask = torch.ones(spec.n, spec.d, dtype=torch.bool)
    mask[:, spec.field_slices["work"]] = False
    return mask


def changed_mask(spec: MachineSpec, before: State, after: State) -> torch.Tensor:
    """``(B, n, d) bool``: all bits of every field whose value differs between the states.

    For one step, that is the memory field of token ``b`` (if its value changed) and the PC
    field of token 0 (if the PC moved). Instruction fields are compared per ``a``, ``b``,
    ``c`` too, so that ``after`` may be a decoded prediction.
    """
    B, device = before.batch_size, before.pc.device
    f, log_n = spec.field_slices, spec.log_n
    mask = torch.zeros(B, spec.n, spec.d, dtype=torch.bool, device=device)
    mem_changed = before.mem != after.mem  # (B, m)
    mask[:, spec.memory_tokens, f["memory"]] = mem_changed.unsqueeze(-1).expand(-1, -1, spec.N)
    inst_changed = before.inst != after.inst  # (B, I, 3)
    mask[:, spec.instruction_tokens, f["instruction"]] = inst_changed.repeat_interleave(
        log_n, dim=-1
    )
    mask[:, 0, f["pc"]] = (before.pc != after.pc).unsqueeze(-1).expand(-1, log_n)
    return mask


def written_mask(spec: MachineSpec, state: State) -> torch.Tensor:
    """``(B, n, d) bool``: the fields a step from ``state`` writes, changed or not: the memory
    field of token ``b`` of the current instruction and the PC field of token 0."""
    B, device = state.batch_size, state.pc.device
    f = spec.field_slices
    mask = torch.zeros(B, spec.n, spec.d, dtype=torch.bool, device=device)
    b = current_instruction(spec, state)[:, 1]
    rows = torch.arange(B, device=device)
    mask[rows, b, f["memory"]] = True
    mask[:, 0, f["pc"]] = True
    return mask
