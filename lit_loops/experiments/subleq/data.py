"""SUBLEQ one-step data: random machine states and the state one step later, as bit matrices.

A batch is a dict::

    input         (B, n, d) float   encode(state)
    target        (B, n, d) float   encode(step(state))
    branch_taken  (B,) bool         the new mem[b] <= 0 (the PC jumped to c)
    written       (B, n, d) bool    written_mask(state): mem[b]'s field and the PC field
    mask          (n, d) bool       loss_mask: False on the work area (not scored)
    fields        {name: (n, d) bool}  the bits of each field scored as a whole by
                                    QuantizedEval: "memory" (memory field of the memory
                                    tokens) and "pc" (PC field of token 0)

``mask`` and ``fields`` are the same in every batch; they travel with it so the module's
loss and the generic ``QuantizedEval`` callback need no SUBLEQ import.
"""

from __future__ import annotations

import lightning as L
import torch

from lit_loops.checks import check, check_choice, check_float, check_int, check_positive_int
from lit_loops.data import fixed_loader, train_stream
from lit_loops.experiments.subleq.machine import (
    MachineSpec,
    State,
    current_instruction,
    encode,
    loss_mask,
    random_states,
    run,
    step,
    written_mask,
)
from lit_loops.experiments.subleq.programs import program_inputs, programs_that_fit
from lit_loops.schedules import Curricula, PhaseSchedule, StepSchedule


def field_masks(spec: MachineSpec) -> dict[str, torch.Tensor]:
    """``{"memory": (n, d) bool, "pc": (n, d) bool}``: the bits of each scored field."""
    f = spec.field_slices
    memory = torch.zeros(spec.n, spec.d, dtype=torch.bool)
    memory[spec.memory_tokens, f["memory"]] = True
    pc = torch.zeros(spec.n, spec.d, dtype=torch.bool)
    pc[0, f["pc"]] = True
    return {"memory": memory, "pc": pc}


TASKS = ("copy", "pc", "step")  # the curriculum's tasks, easiest first


def make_batch(spec: MachineSpec, state: State, task: torch.Tensor | None = None) -> dict:
    """One batch (see the module docstring) from a batch of states, all vectorised.

    ``task`` (B,) long indexes ``TASKS`` per sample: ``copy`` (target = input), ``pc``
    (only the PC moves), ``step`` (the full step, the default for every sample).
    """
    nxt = step(spec, state)
    rows = torch.arange(state.batch_size, device=state.pc.device)
    b = current_instruction(spec, state)[:, 1]  # (B,) absolute token of b
    if task is not None:  # easier targets for the curriculum's early phases
        full = task == TASKS.index("step")
        moves = full | (task == TASKS.index("pc"))
        nxt = State(
            torch.where(full[:, None], nxt.mem, state.mem),
            state.inst,
            torch.where(moves, nxt.pc, state.pc),
        )
    return {
        "input": encode(spec, state),
        "target": encode(spec, nxt),
        "branch_taken": nxt.mem[rows, b - spec.s] <= 0,
        "written": written_mask(spec, state),
        "mask": loss_mask(spec),
        "fields": field_masks(spec),
    }


def program_trace_states(spec: MachineSpec, max_inputs: int = 256, seed: int = 0) -> State:
    """Every state that the library's programs pass through on the simulator: each program
    that fits ``spec``, on every valid input (a sample of ``max_inputs`` beyond that), from
    its first state to its halt. Returns one batch ``(K, ...)``."""
    g = torch.Generator().manual_seed(seed)
    pool = []
    for prog in programs_that_fit(spec).values():
        inputs = program_inputs(prog, spec.N, max_inputs, g)
        trace = run(spec, prog.assemble(spec).initial_state(inputs), prog.max_steps(spec.N))
        for t, state in enumerate(trace.states):
            pool.append(state[trace.steps >= t])  # reached by a real step (no halt repeats)
    return State.cat(pool)


class SubleqBatchMaker:
    """Draws a training batch: fresh random states, or a uniform sample (with replacement)
    of a fixed training set; then, in a ``trace_fraction`` of the rows (each independently),
    a state sampled from ``trace_states`` (real program traces). Picklable, so dataloader
    workers can use it.

    ``curriculum`` (a ``PhaseSchedule`` over ``TASKS``) draws each row's task;
    ``operand_bits`` and ``instructions`` (``StepSchedule``s) give the fresh random states'
    ``value_bits`` and ``instructions`` (see ``random_states``) at the step. The fixed
    training set and the trace rows do not follow them.
    """

    def __init__(
        self,
        spec: MachineSpec,
        batch_size: int,
        branch_boundary_fraction: float = 0.0,
        train_states: State | None = None,
        trace_states: State | None = None,
        trace_fraction: float = 0.0,
        curriculum: PhaseSchedule | None = None,
        operand_bits: StepSchedule | None = None,
        instructions: StepSchedule | None = None,
    ) -> None:
        self.spec = spec
        self.curriculum = curriculum
        self.operand_bits = operand_bits
        self.instructions = instructions
        self.batch_size = batch_size
        self.branch_boundary_fraction = branch_boundary_fraction
        self.train_states = train_states
        self.trace_states = trace_states
        self.trace_fraction = trace_fraction

    def __call__(self, g: torch.Generator, step: int = 0) -> dict:
        if self.train_states is None:
            state = random_states(
                self.spec,
                self.batch_size,
                g,
                self.branch_boundary_fraction,
                value_bits=None if self.operand_bits is None else self.operand_bits.value(step),
                instructions=None if self.instructions is None else self.instructions.value(step),
            )
        else:
            idx = torch.randint(self.train_states.batch_size, (self.batch_size,), generator=g)
            state = self.train_states[idx]
        if self.trace_states is not None and self.trace_fraction > 0:
            rows = torch.rand(self.batch_size, generator=g) < self.trace_fraction  # (B,)
            pick = torch.randint(self.trace_states.batch_size, (int(rows.sum()),), generator=g)
            real = self.trace_states[pick]
            state.mem[rows], state.inst[rows], state.pc[rows] = real.mem, real.inst, real.pc
        task = None
        if self.curriculum is not None:  # phase names are TASKS entries
            phase = self.curriculum.sample(step, self.batch_size, g)  # (B,) index into names
            lookup = torch.tensor([TASKS.index(name) for name in self.curriculum.names])
            task = lookup[phase]
        return make_batch(self.spec, state, task)


class SubleqDataModule(L.LightningDataModule):
    """One SUBLEQ step on random states of a machine ``MachineSpec(n, s, m, N, scale)``.

    Args:
        n, s, m, N, scale: the machine (see ``MachineSpec``): tokens, scratchpad tokens,
            memory tokens, bits per integer, and the encoding's ``±scale``.
        batch_size: training states per step.
        val_size: validation states, drawn once from ``val_seed`` (full random states,
            no branch-boundary bias).
        val_batch_size: validation states per batch.
        branch_boundary_fraction: fraction of training states whose branch test is on its
            boundary (``mem[b] - mem[a]`` in {-1, 0, 1}), see ``random_states``.
        train_size: 0 draws fresh states every step; > 0 draws a fixed training set of
            that many states once from ``seed`` and samples it uniformly every step.
        trace_fraction: fraction of the training states taken instead from real program
            traces (``program_trace_states``: the library's programs on the simulator).
        tasks, phase_steps, transition, transition_steps: the task curriculum, a
            ``PhaseSchedule`` over ``tasks`` (names from ``TASKS``: ``copy`` the input ->
            move only the ``pc`` -> the full ``step``); ``phase_steps`` are the lengths of
            all phases but the last. The default, ``["step"]``, is no curriculum. The mix
            is logged by ``CurriculumLog``. Validation is always the full step.
        operand_bits_start, operand_bits_increment, operand_bits_every: the operand-range
            curriculum, small values first, a ``StepSchedule`` from ``operand_bits_start``
            up to ``N``: ``k = min(N, start + increment * (step // every))``. While
            ``k < N`` the memory words of fresh training states are uniform over the
            ``k``-bit signed range ``[-2^(k-1), 2^(k-1) - 1]`` (``random_states(...,
            value_bits=k)``; a branch boundary's ``mem[a]`` is clamped into that range);
            at ``k = N`` they are the full-range draw. ``operand_bits_start`` in
            ``[1, N]``; None (the default) is no curriculum. Logged as
            ``curriculum/operand_bits``.
        instructions_start, instructions_increment, instructions_every: the program-length
            curriculum, few instructions first (after anadim/subleq-transformer), the same
            kind of schedule up to the ``n - s - m`` instruction tokens. While ``k`` is
            below that, the PC and every jump target ``c`` of fresh training states point
            into the first ``k`` instruction tokens only: a program of ``k`` instructions
            (``random_states(..., instructions=k)``; the other instruction tokens still
            hold random instructions, not executed by the step; falling through the
            ``k``-th leads on to the ``k+1``-th, so the target's PC is among the first
            ``k + 1``). ``instructions_start`` in ``[1, n - s - m]``; None (the default)
            is no curriculum. Logged as ``curriculum/instructions``.

            For both: an increment of 0 holds the start value for good; at its end a
            curriculum draws exactly the states drawn without one (same seed, same
            states). Validation is always the full machine. Only fresh random training
            states follow them: the ``trace_fraction`` rows are real program states,
            unaffected, and a fixed training set (``train_size > 0``) is drawn once,
            before any step, so it cannot follow a curriculum: that combination raises.
        seed: seed of the training stream (with the rank and step) and training set.
        val_seed: seed of the validation set.
        num_workers: dataloader worker processes for the training stream.
    """

    def __init__(
        self,
        n: int = 16,
        s: int = 4,
        m: int = 4,
        N: int = 4,
        scale: float = 1.0,
        batch_size: int = 64,
        val_size: int = 2048,
        val_batch_size: int = 1024,
        branch_boundary_fraction: float = 0.0,
        train_size: int = 0,
        trace_fraction: float = 0.0,
        tasks: list[str] | None = None,
        phase_steps: list[int] | None = None,
        transition: str = "linear",
        transition_steps: int = 0,
        operand_bits_start: int | None = None,
        operand_bits_increment: int = 1,
        operand_bits_every: int = 1000,
        instructions_start: int | None = None,
        instructions_increment: int = 1,
        instructions_every: int = 1000,
        seed: int = 0,
        val_seed: int = 12345,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.spec = MachineSpec(n, s, m, N, scale)  # validates the machine's arguments
        check_positive_int("batch_size", batch_size)
        check_positive_int("val_size", val_size)
        check_positive_int("val_batch_size", val_batch_size)
        check_float("branch_boundary_fraction", branch_boundary_fraction, 0.0, 1.0)
        check_int("train_size", train_size, min_value=0)
        check_float("trace_fraction", trace_fraction, 0.0, 1.0)
        tasks = list(tasks) if tasks is not None else ["step"]
        check(len(tasks) >= 1, "tasks", tasks, f"must name at least one task of {list(TASKS)}")
        for task in tasks:
            check_choice("tasks", task, TASKS)
        # None without a curriculum, so the batch maker skips it.
        self.task_schedule = (
            PhaseSchedule(tasks, list(phase_steps or []), transition, transition_steps)
            if tasks != ["step"]
            else None
        )
        n_inst = self.spec.num_instructions
        self.operand_bits = self._step_schedule(
            "operand_bits",
            operand_bits_start,
            operand_bits_increment,
            operand_bits_every,
            end=self.spec.N,
            end_is=f"N={self.spec.N} (the full range)",
            train_size=train_size,
        )
        self.instructions = self._step_schedule(
            "instructions",
            instructions_start,
            instructions_increment,
            instructions_every,
            end=n_inst,
            end_is=f"n - s - m = {n_inst} (every instruction token)",
            train_size=train_size,
        )
        # What CurriculumLog reads: the task mix, operand bits and instructions in use.
        schedules = [self.task_schedule, self.operand_bits, self.instructions]
        self.curriculum = Curricula(*schedules) if any(s is not None for s in schedules) else None
        check_int("seed", seed)
        check_int("val_seed", val_seed)
        check_int("num_workers", num_workers, min_value=0)
        self.save_hyperparameters()
        self._train_states: State | None = None
        self._val_batches: list[dict] | None = None

    @staticmethod
    def _step_schedule(
        name: str,
        start: int | None,
        increment: int,
        every: int,
        end: int,
        end_is: str,
        train_size: int,
    ) -> StepSchedule | None:
        """The ``StepSchedule`` of one curriculum (None without one), its arguments checked."""
        check_int(f"{name}_increment", increment, min_value=0)
        check_positive_int(f"{name}_every", every)
        if start is None:
            return None
        check_int(f"{name}_start", start, min_value=1)
        check(start <= end, f"{name}_start", start, f"must not exceed {end_is}")
        check(
            train_size == 0,
            f"{name}_start",
            start,
            f"needs fresh training states (train_size=0, not {train_size}): a fixed training "
            "set is drawn once, before any step, so it cannot follow a curriculum",
        )
        return StepSchedule(name, start, end, increment, every)

    def model_args(self) -> dict:
        # scale too: the model reads its input and writes its output in units of ±scale.
        return {"n_tokens": self.spec.n, "d_state": self.spec.d, "scale": self.spec.scale}

    def train_states(self) -> State | None:
        """The fixed training set (``train_size > 0``), drawn once; None for fresh states."""
        hp = self.hparams
        if hp.train_size and self._train_states is None:
            g = torch.Generator().manual_seed(hp.seed)
            self._train_states = random_states(
                self.spec, hp.train_size, g, hp.branch_boundary_fraction
            )
        return self._train_states

    def val_batches(self) -> list[dict]:
        """The validation set as ready-made batches, drawn once from ``val_seed``."""
        if self._val_batches is None:
            g = torch.Generator().manual_seed(self.hparams.val_seed)
            states = random_states(self.spec, self.hparams.val_size, g)
            size = self.hparams.val_batch_size
            self._val_batches = [
                make_batch(self.spec, states[i : i + size])
                for i in range(0, self.hparams.val_size, size)
            ]
        return self._val_batches

    def train_dataloader(self):
        hp = self.hparams
        traces = program_trace_states(self.spec, seed=hp.seed) if hp.trace_fraction > 0 else None
        maker = SubleqBatchMaker(
            self.spec,
            hp.batch_size,
            hp.branch_boundary_fraction,
            self.train_states(),
            trace_states=traces,
            trace_fraction=hp.trace_fraction,
            curriculum=self.task_schedule,
            operand_bits=self.operand_bits,
            instructions=self.instructions,
        )
        return train_stream(self, maker)

    def val_dataloader(self):
        return fixed_loader(self.val_batches())

    test_dataloader = val_dataloader
    predict_dataloader = val_dataloader
