"""Callbacks shared by all experiments; each works with any LightningModule.

``RunName`` (run names and folders), ``RestoreBestWeights`` (best weights back at the end
of fit), ``QuantizedEval`` (bit-matrix outputs snapped and scored), ``CurriculumLog`` and
its ``PhaseSchedule`` (phase mixing over steps) and ``StepSchedule`` (a growing integer),
``GenerateSample`` (a generated text now and then).
"""

from lit_loops.callbacks.curriculum import Curricula, CurriculumLog, PhaseSchedule, StepSchedule
from lit_loops.callbacks.quantize import QuantizedEval
from lit_loops.callbacks.restore_best import RestoreBestWeights
from lit_loops.callbacks.run_name import RunName, find_run_name
from lit_loops.callbacks.samples import GenerateSample

__all__ = [
    "Curricula",
    "CurriculumLog",
    "GenerateSample",
    "PhaseSchedule",
    "QuantizedEval",
    "RestoreBestWeights",
    "RunName",
    "StepSchedule",
    "find_run_name",
]
