"""Rollouts: a model applied to its own quantized output, step after step, compared with
the simulator at every step (the paper's looping of a one-step model into a computer).

Each step the model's output is snapped to bits (``y > eps`` -> ``+scale``, else
``-scale``) and the work area is reset to bit 0 (every input holds bit 0 there), and the
result is the next input. A rollout is exact when every step's scored bits (``loss_mask``)
equal the simulator's, including one step past the simulator's halt: the model must hold
the fixed point too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from lit_loops.checks import check_int
from lit_loops.experiments.subleq.machine import (
    MachineSpec,
    State,
    encode,
    loss_mask,
    random_states,
    run,
)
from lit_loops.experiments.subleq.programs import program_inputs, programs_that_fit

Predict = Callable[[torch.Tensor], torch.Tensor]  # (B, n, d) -> (B, n, d) raw model output


def quantize(spec: MachineSpec, y: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """``(B, n, d)`` raw outputs -> the next input: ``±scale`` bits, work area bit 0."""
    x = torch.where(y > eps, spec.scale, -spec.scale).to(y.dtype)
    x[:, :, spec.field_slices["work"]] = -spec.scale
    return x


@dataclass
class RolloutResult:
    """Per batch element: ``exact`` (B,) bool; ``first_divergence`` (B,) long, the first
    step (1-based) whose scored bits differ from the simulator's, 0 when none; ``steps``
    (B,) long, the simulator steps before its fixed point (or the step limit)."""

    exact: torch.Tensor
    first_divergence: torch.Tensor
    steps: torch.Tensor
    model_states: list[torch.Tensor]  # (B, n, d) inputs the model saw, from step 0
    simulator_states: list[State]


@torch.no_grad()
def rollout(
    predict: Predict,
    spec: MachineSpec,
    state: State,
    max_steps: int,
    eps: float = 0.0,
    stop_when_all_wrong: bool = True,
) -> RolloutResult:
    """Roll ``state`` out for up to ``max_steps`` steps through ``predict`` and the simulator.

    With ``stop_when_all_wrong`` the loop ends once every element has diverged (the
    verdicts cannot change); ``model_states`` is then shorter than ``simulator_states``.
    """
    trace = run(spec, state, max_steps)
    sim = list(trace.states)
    if len(sim) - 1 < max_steps:  # everything halted early: check one step at the fixed point
        sim.append(trace.final)
    mask = loss_mask(spec).to(state.pc.device)
    x = encode(spec, state)
    B = state.batch_size
    first = torch.zeros(B, dtype=torch.long, device=x.device)
    model_states = [x]
    for t in range(1, len(sim)):
        x = quantize(spec, predict(x), eps)
        model_states.append(x)
        wrong = (((x > 0) != (encode(spec, sim[t]) > 0)) & mask).flatten(1).any(1)  # (B,)
        first = torch.where((first == 0) & wrong, torch.full_like(first, t), first)
        if stop_when_all_wrong and bool((first > 0).all()):
            break
    return RolloutResult(first == 0, first, trace.steps, model_states, sim)


class RolloutEval(Callback):
    """Logs, after every validation, how well the model runs whole programs when looped:

    * ``val/rollout_exact``: fraction of the program library (``programs_that_fit`` the
      DataModule's machine, up to ``max_inputs`` inputs each, drawn once) rolled out exactly;
    * ``val/rollout_exact_random``: the same for ``random_programs`` random states run
      ``steps`` steps;
    * ``val/rollout_divergence``: mean first divergence step of the wrong random rollouts
      (0 when all are exact).

    The evaluation sets are drawn once from ``seed`` (the same at every validation and on
    every rank). Needs a DataModule with a ``spec`` (``SubleqDataModule``).
    """

    def __init__(
        self, random_programs: int = 256, steps: int = 16, max_inputs: int = 64, seed: int = 0
    ) -> None:
        check_int("random_programs", random_programs, min_value=1)
        check_int("steps", steps, min_value=1)
        check_int("max_inputs", max_inputs, min_value=1)
        self.random_programs = random_programs
        self.steps = steps
        self.max_inputs = max_inputs
        self.seed = seed
        self._sets: list[tuple[State, int]] | None = None  # (library states, max steps) per program
        self._random: State | None = None

    def _draw(self, spec: MachineSpec) -> None:
        g = torch.Generator().manual_seed(self.seed)
        self._sets = []
        for prog in programs_that_fit(spec).values():
            inputs = program_inputs(prog, spec.N, self.max_inputs, g)
            self._sets.append((prog.assemble(spec).initial_state(inputs), prog.max_steps(spec.N)))
        self._random = random_states(spec, self.random_programs, g)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        spec = trainer.datamodule.spec
        if self._sets is None:
            self._draw(spec)
        device = pl_module.device
        exact = [rollout(pl_module, spec, s.to(device), t).exact for s, t in self._sets]
        random = rollout(pl_module, spec, self._random.to(device), self.steps)
        wrong = random.first_divergence[~random.exact].float()
        kw = dict(on_step=False, on_epoch=True, sync_dist=True)
        pl_module.log("val/rollout_exact", torch.cat(exact).float().mean(), **kw)
        pl_module.log("val/rollout_exact_random", random.exact.float().mean(), **kw)
        pl_module.log(
            "val/rollout_divergence", wrong.mean() if len(wrong) else wrong.new_zeros(()), **kw
        )
