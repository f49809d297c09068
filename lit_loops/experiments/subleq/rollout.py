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

import torch

from lit_loops.experiments.subleq.machine import MachineSpec, State, encode, loss_mask, run

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
    predict: Predict, spec: MachineSpec, state: State, max_steps: int, eps: float = 0.0
) -> RolloutResult:
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
    return RolloutResult(first == 0, first, trace.steps, model_states, sim)
