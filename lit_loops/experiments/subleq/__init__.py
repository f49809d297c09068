"""SUBLEQ (seed 000): the machine and its bit-matrix encoding (machine.py), an assembler
(assembler.py), a program library (programs.py), the DataModule (data.py) and the model
(module.py)."""

from lit_loops.experiments.subleq.assembler import Program, assemble, parse
from lit_loops.experiments.subleq.data import SubleqDataModule
from lit_loops.experiments.subleq.machine import (
    FIELDS,
    MachineSpec,
    State,
    Trace,
    changed_mask,
    check_state,
    current_instruction,
    decode,
    encode,
    is_halted,
    loss_mask,
    random_states,
    run,
    step,
    written_mask,
)
from lit_loops.experiments.subleq.module import SubleqModule
from lit_loops.experiments.subleq.programs import (
    PROGRAMS,
    ProgramSpec,
    program_inputs,
    programs_that_fit,
)

__all__ = [
    "FIELDS",
    "PROGRAMS",
    "MachineSpec",
    "Program",
    "ProgramSpec",
    "State",
    "SubleqDataModule",
    "SubleqModule",
    "Trace",
    "assemble",
    "changed_mask",
    "check_state",
    "current_instruction",
    "decode",
    "encode",
    "is_halted",
    "loss_mask",
    "parse",
    "program_inputs",
    "programs_that_fit",
    "random_states",
    "run",
    "step",
    "written_mask",
]
