"""Curricula as functions of the training step (not callbacks): plain, picklable objects
that a DataModule hands to its batch maker or a LightningModule reads each step.

``PhaseSchedule`` (which share of each batch comes from each phase) draws every sample's
phase from ``mix(step)`` with the batch's own generator. ``StepSchedule`` is one integer (a
dimension, a prompt length, a loop count) that grows from ``start`` by ``increment`` every
``every`` steps up to ``end``, as in Garg et al.'s in-context learning curriculum.
``Curricula`` merges several into one. Each is a function of the global step alone, so
dataloader workers, ranks and resumed runs agree without any state to pass around.

Anything with ``current(step) -> dict[str, float]`` is a curriculum to
``lit_loops.callbacks.CurriculumLog``, which only logs the current values.

The phases follow each other: phase ``k`` starts at ``sum(phase_steps[:k])``. With
``transition="jump"`` the mix switches at once; with ``"linear"`` (the default) it moves
linearly from phase ``k`` to ``k+1`` over ``transition_steps`` steps centred on the
boundary, so the two overlap. ``replay`` keeps the finished phases in the mix: once phase
``k >= 1`` is under way, that share of every batch is drawn from phases ``0..k-1``,
uniformly or in proportion to ``replay_weights`` (e.g. the tasks each phase holds, so that
a phase of many tasks is not starved), (0, the default, drops them, and a model may forget
them).
"""

from __future__ import annotations

import torch

from lit_loops.checks import check, check_choice, check_float, check_int


class PhaseSchedule:
    """Mix of ``len(names)`` phases over training steps.

    Args:
        names: the phases, in order.
        phase_steps: the length of every phase but the last (which runs on), in steps.
        transition: ``linear`` (overlapping, the default) or ``jump``.
        transition_steps: width of each linear transition (ignored for ``jump``).
        replay: share of each batch given back to the finished phases (see above).
        replay_weights: how the replay share is split among the finished phases, one
            positive weight per phase (None: equally).
    """

    def __init__(
        self,
        names: list[str],
        phase_steps: list[int],
        transition: str = "linear",
        transition_steps: int = 0,
        replay: float = 0.0,
        replay_weights: list[float] | None = None,
    ) -> None:
        check(len(names) >= 1, "names", names, "must name at least one phase")
        if replay_weights is not None:
            check(
                len(replay_weights) == len(names)
                and all(isinstance(w, int | float) and w > 0 for w in replay_weights),
                "replay_weights",
                replay_weights,
                f"must give one positive weight per phase: {len(names)} numbers",
            )
        check(
            len(phase_steps) == len(names) - 1,
            "phase_steps",
            phase_steps,
            f"must give the length of every phase but the last: {len(names) - 1} numbers",
        )
        for length in phase_steps:
            check_int("phase_steps", length, min_value=1)
        check_choice("transition", transition, ("linear", "jump"))
        check_int("transition_steps", transition_steps, min_value=0)
        check_float("replay", replay, 0.0, 1.0, high_inclusive=False)
        if transition == "linear" and phase_steps:
            check(
                transition_steps <= min(phase_steps),
                "transition_steps",
                transition_steps,
                f"must not exceed the shortest phase ({min(phase_steps)} steps)",
            )
        self.names = list(names)
        self.boundaries = [sum(phase_steps[: k + 1]) for k in range(len(phase_steps))]
        self.width = transition_steps if transition == "linear" else 0
        self.replay = replay
        self.replay_weights = torch.tensor(
            [1.0] * len(names) if replay_weights is None else replay_weights, dtype=torch.float32
        )

    def position(self, step: int) -> float:
        """A continuous phase index: ``k`` inside phase ``k``, fractional in a transition."""
        if self.width == 0:
            return float(sum(step >= b for b in self.boundaries))
        return sum(
            min(1.0, max(0.0, (step - b + self.width / 2) / self.width)) for b in self.boundaries
        )

    def mix(self, step: int) -> torch.Tensor:
        """``(P,)`` probabilities of the phases at ``step``."""
        pos = self.position(step)
        k = min(int(pos), len(self.names) - 1)
        frac = pos - k
        mix = torch.zeros(len(self.names))
        mix[k] = 1.0 - frac
        if frac > 0:
            mix[k + 1] = frac
        if self.replay > 0 and k >= 1:  # phases 0..k-1 are finished
            mix = mix * (1 - self.replay)
            w = self.replay_weights[:k]
            mix[:k] += self.replay * w / w.sum()
        return mix

    def current(self, step: int) -> dict[str, float]:
        return dict(zip(self.names, self.mix(step).tolist(), strict=True))

    def sample(self, step: int, n: int, generator: torch.Generator) -> torch.Tensor:
        """``(n,)`` long: a phase for each of ``n`` samples, drawn from ``mix(step)``."""
        cumulative = self.mix(step).cumsum(0)
        u = torch.rand(n, generator=generator) * cumulative[-1]
        return torch.searchsorted(cumulative, u, right=True).clamp(max=len(self.names) - 1)


class StepSchedule:
    """An integer that grows in steps: ``min(end, start + increment * (step // every))``.

    ``start == end`` (or ``increment == 0``) is a constant: no curriculum.
    """

    def __init__(self, name: str, start: int, end: int, increment: int, every: int) -> None:
        check_int(f"{name}_start", start, min_value=1)
        check_int(name, end, min_value=1)
        check(start <= end, f"{name}_start", start, f"must not exceed the final value {end}")
        check_int(f"{name}_increment", increment, min_value=0)
        check_int(f"{name}_every", every, min_value=1)
        self.name, self.start, self.end = name, start, end
        self.increment, self.every = increment, every

    def value(self, step: int) -> int:
        return min(self.end, self.start + self.increment * (step // self.every))

    def current(self, step: int) -> dict[str, float]:
        return {self.name: float(self.value(step))}


class Curricula:
    """Several curricula logged as one: ``current`` merges their values."""

    def __init__(self, *schedules) -> None:
        self.schedules = [s for s in schedules if s is not None]

    def current(self, step: int) -> dict[str, float]:
        out: dict[str, float] = {}
        for schedule in self.schedules:
            out.update(schedule.current(step))
        return out
