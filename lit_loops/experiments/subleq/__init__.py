"""SUBLEQ (seed 000): the machine, its bit-matrix encoding, an assembler and a program
library (machine.py, assembler.py), the DataModule (data.py) and the model (module.py)."""

from lit_loops.experiments.subleq.assembler import (
    PROGRAMS,
    Program,
    ProgramSpec,
    assemble,
    parse,
    programs_that_fit,
)
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
    "programs_that_fit",
    "random_states",
    "run",
    "step",
    "written_mask",
]
