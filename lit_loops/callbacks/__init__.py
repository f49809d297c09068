"""Callbacks shared by all experiments; each works with any LightningModule.

``RunName`` (run names and folders), ``RestoreBestWeights`` (best weights back at the end
of fit), ``QuantizedEval`` (bit-matrix outputs snapped and scored), ``CurriculumLog`` (the
values of the curricula in ``lit_loops.schedules``), ``GenerateSample`` (a generated
sample now and then, from any module that generates), ``CheckpointOnInterrupt`` (SIGTERM /
Ctrl-C: a checkpoint, then exit), ``NonFiniteLossGuard`` (NaN: stop with a checkpoint, or
skip), ``SweepReport`` (metrics back to ``lit-loops sweep``), ``Throughput`` (training
wall time and tokens/s beside the metrics).
"""

from lit_loops.callbacks.curriculum import CurriculumLog
from lit_loops.callbacks.interrupt import CheckpointOnInterrupt
from lit_loops.callbacks.nonfinite import NonFiniteLossError, NonFiniteLossGuard
from lit_loops.callbacks.quantize import QuantizedEval
from lit_loops.callbacks.restore_best import RestoreBestWeights
from lit_loops.callbacks.run_name import RunName, find_run_name
from lit_loops.callbacks.samples import GenerateSample
from lit_loops.callbacks.throughput import Throughput

__all__ = [
    "CheckpointOnInterrupt",
    "CurriculumLog",
    "GenerateSample",
    "NonFiniteLossError",
    "NonFiniteLossGuard",
    "QuantizedEval",
    "RestoreBestWeights",
    "RunName",
    "Throughput",
    "find_run_name",
]
