"""Callbacks shared by all experiments; each works with any LightningModule.

Planned here, next to these, as the experiments that need them arrive:
``curriculum.py`` (phase mixing over steps) and ``quantize.py`` (quantized-output
evaluation).
"""

from lit_loops.callbacks.restore_best import RestoreBestWeights
from lit_loops.callbacks.run_name import RunName, find_run_name

__all__ = ["RestoreBestWeights", "RunName", "find_run_name"]
