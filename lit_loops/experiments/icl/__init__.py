"""In-context learning (seed 001): function classes (tasks.py), the DataModule that samples
prompts on the training device (data.py), standard and looped GPT-2-style models
(module.py), and the classical baselines (baselines.py)."""

from lit_loops.experiments.icl.data import ICLDataModule
from lit_loops.experiments.icl.module import ICLModule, prompt_model
from lit_loops.experiments.icl.tasks import TASKS, Task, interleave, make_task, sample_xs

__all__ = [
    "ICLDataModule",
    "ICLModule",
    "prompt_model",
    "TASKS",
    "Task",
    "interleave",
    "make_task",
    "sample_xs",
]
