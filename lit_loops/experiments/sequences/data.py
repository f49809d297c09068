"""Batches of integer sequences for next-term prediction, mixed over the curriculum's
phases (``PhaseSchedule``: overlapping linear transitions by default, or jumps).

A batch: ``{"seq": (B, L) long in 0..255, "valid": (B, L) bool, "family": (B,) long,
"phase": (B,) long}`` with ``L = window + 1``: the model reads ``seq[:, :-1]`` and
predicts every next term. With ``variable_length``, each row keeps a uniform random
``min_terms .. L`` leading terms and the rest is padding (``valid`` False, value 0),
which the loss and the metrics skip.

Every row's phase is drawn from the schedule's mix at the batch's step, then its family
uniformly within the phase, then the row from the family's bank (``banks.py``): with a share
``small_share`` of small start values (``families.py``), and without the held-out parameter
sets (``heldout.py``) when ``heldout_params`` is on. Validation holds ``val_per_family``
sequences of every family, full length, drawn once from ``val_seed``, from the family's
table as it is (no small-start share) less the held-out sets; with ``heldout_params``,
``val_dataloader`` is ``[that set, the held-out set]``, the second with ``val_per_family``
held-out sequences of every family that has some (none of them in any training bank).
"""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import get_worker_info

from lit_loops.checks import check, check_choice, check_float, check_int, check_positive_int
from lit_loops.data import (
    OnTheFlyBatches,
    fixed_loader,
    generator_for,
    stream_loader,
    trainer_rank_and_step,
)
from lit_loops.experiments.sequences.banks import family_bank, generate_rows, rows_for
from lit_loops.experiments.sequences.families import FAMILIES
from lit_loops.schedules import PhaseSchedule

PHASE_NAMES = ("phase1", "phase2", "phase3")


STEPS_PER_CALL = 8  # training steps the stream draws in one call of the batch maker


class SequenceBatchMaker:
    """Picklable ``make(generator, step) -> batch`` for the training stream; ``batches``
    makes several steps' batches in one call (``MultiStepBatches``), the same ones."""

    def __init__(
        self,
        families: list[str],
        schedule: PhaseSchedule,
        phases: list[int],
        batch_size: int,
        length: int,
        min_terms: int | None = None,
        small_share: float = 0.0,
        split: str = "all",
    ) -> None:
        self.families, self.schedule = families, schedule
        self.batch_size, self.length, self.min_terms = batch_size, length, min_terms
        self.small_share, self.split = small_share, split
        # the schedule's k-th phase is phase ``phases[k]``: its families as indices
        self.by_phase = [
            torch.tensor([i for i, f in enumerate(families) if FAMILIES[f].phase == p])
            for p in phases
        ]
        # the same as a table, (P, most members) padded with 0: [phase, draw] -> family
        self.members = torch.zeros(
            len(phases), max(len(m) for m in self.by_phase), dtype=torch.long
        )
        for k, m in enumerate(self.by_phase):
            self.members[k, : len(m)] = m
        self.phase_of = torch.tensor([FAMILIES[name].phase for name in families])
        self._mix: tuple[float, torch.Tensor] | None = None  # (position, cumulative mix)

    def __call__(self, g: torch.Generator, step: int = 0) -> dict:
        return self.batches([g], [step])[0]

    def cumulative_mix(self, step: int) -> torch.Tensor:
        """``schedule.mix(step).cumsum(0)`` (the phase draw's table), kept while the
        schedule's position stays (every step outside the transitions)."""
        position = self.schedule.position(step)
        if self._mix is None or self._mix[0] != position:
            self._mix = (position, self.schedule.mix(step).cumsum(0))
        return self._mix[1]

    def batches(self, generators: list[torch.Generator], steps: list[int]) -> list[dict]:
        """The batches of ``steps``, step ``steps[i]`` drawn from ``generators[i]``: each
        generator makes the same draws in the same order as ``PhaseSchedule.sample`` and
        ``make_batch`` would for its step alone (the phases, each phase's families, the
        bank rows, the kept lengths), so the batches are those of one call per step; the
        work between the draws (the phase lookup, the families, the bank gather, the
        masks) is done once for all the steps' rows."""
        B, L, n, P = self.batch_size, self.length, len(steps), len(self.by_phase)
        # the phases: u * the mix's total, looked up in each step's cumulative mix
        cumulative = torch.stack([self.cumulative_mix(s) for s in steps])  # (n, P)
        u = torch.stack([torch.rand(B, generator=g) for g in generators])
        u = u * cumulative[:, -1:]
        phase = torch.searchsorted(cumulative, u, right=True).clamp(max=P - 1)  # (n, B)
        # the families: per step, per phase present, a uniform draw among its members for
        # its rows in order; the rows sorted by (step, phase) take the draws in that order
        counts = torch.nn.functional.one_hot(phase, P).sum(1).tolist()  # (n, P)
        draws = [
            torch.randint(len(self.by_phase[p]), (count,), generator=g)
            for g, row in zip(generators, counts, strict=True)
            for p, count in enumerate(row)
            if count
        ]
        key = (phase + P * torch.arange(n)[:, None]).flatten()
        order = torch.sort(key, stable=True).indices
        family = torch.empty(n * B, dtype=torch.long)
        family[order] = self.members[key[order] % P, torch.cat(draws)]
        # the bank rows, then (variable length) the terms each row keeps
        u = torch.cat([torch.rand(B, generator=g, dtype=torch.float64) for g in generators])
        seq = rows_for(self.families, family, u, L, self.small_share, self.split)  # (nB, L)
        valid = torch.ones(n * B, L, dtype=torch.bool)
        if self.min_terms is not None:
            keep = torch.cat(
                [torch.randint(self.min_terms, L + 1, (B, 1), generator=g) for g in generators]
            )
            valid = torch.arange(L)[None, :] < keep
            seq = seq.masked_fill(~valid, 0)
        parts = (
            t.view(n, B, *t.shape[1:]).unbind(0)
            for t in (seq, valid, family, self.phase_of[family])
        )
        return [
            {"seq": s, "valid": v, "family": f, "phase": p}
            for s, v, f, p in zip(*parts, strict=True)
        ]


class MultiStepBatches(OnTheFlyBatches):
    """``OnTheFlyBatches`` whose maker draws ``steps_per_call`` of its steps in one call
    (``SequenceBatchMaker.batches``), each from its own ``(seed, rank, step)`` generator:
    the same stream, batch for batch (worker ``w`` of ``W`` still makes steps ``w, w + W,
    ...``; a resumed run starts at its next step), at a fraction of the calls."""

    def __init__(
        self,
        make_batch: SequenceBatchMaker,
        seed: int,
        rank: int = 0,
        start_step: int = 0,
        steps_per_call: int = STEPS_PER_CALL,
    ) -> None:
        super().__init__(make_batch, seed, rank, start_step)
        self.steps_per_call = steps_per_call

    def __iter__(self):
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        step = self.start_step + worker
        while True:
            steps = [step + i * num_workers for i in range(self.steps_per_call)]
            generators = [generator_for(self.seed, self.rank, s) for s in steps]
            yield from self.make_batch.batches(generators, steps)
            step += self.steps_per_call * num_workers


def make_batch(
    families: list[str],
    family: torch.Tensor,
    g: torch.Generator,
    length: int,
    min_terms: int | None = None,
    small_share: float = 0.0,
    split: str = "all",
) -> dict:
    """Sequences of the given ``family`` indices (B,), drawn from the families' banks
    (``banks.generate_rows``: a few tensor ops for the whole batch)."""
    B = family.shape[0]
    seq = generate_rows(g, families, family, length, small_share, split)  # (B, length)
    valid = torch.ones(B, length, dtype=torch.bool)
    if min_terms is not None:  # variable length: keep a random number of leading terms
        keep = torch.randint(min_terms, length + 1, (B, 1), generator=g)
        valid = torch.arange(length)[None, :] < keep
        seq = seq.masked_fill(~valid, 0)
    phase = torch.tensor([FAMILIES[name].phase for name in families])[family]
    return {"seq": seq, "valid": valid, "family": family, "phase": phase}


class SequenceDataModule(L.LightningDataModule):
    """Integer sequences of the design document's families (see ``families.py``).

    Args:
        window: terms the model sees before predicting the next (8 by default; 16 is the
            document's other option).
        variable_length: pad rows to the window with a random number of real terms, at
            least ``min_terms`` (the document's third option).
        families: the family names to use (None: all of them).
        batch_size: sequences per training step.
        phase_steps, transition, transition_steps: the curriculum over the three phases
            (``PhaseSchedule``): the lengths of phases 1 and 2 in steps, ``linear``
            (overlapping, the default) or ``jump``, and the width of each transition.
            With families from fewer phases, give the lengths of those phases but the
            last. ``replay``: the share of each batch drawn from the finished phases
            (0, the document's schedule, drops them); ``replay_by``: split among them
            equally (``phase``) or by their number of families (``family``: phase 2's nine
            step patterns are not fed less than phase 1's five).
        val_per_family: validation sequences per family (full length, from ``val_seed``).
        small_share: the share of every family's training draws with small start values
            (0..3, ``families.py``); 0 draws the tables uniformly (the stream before issue 18).
        heldout_params: leave the held-out parameter sets of ``heldout.py`` out of training
            and validate on them as a second validation set.
        seed, val_seed, num_workers: as in every DataModule here.
    """

    def __init__(
        self,
        window: int = 8,
        variable_length: bool = False,
        min_terms: int = 2,
        families: list[str] | None = None,
        batch_size: int = 64,
        phase_steps: list[int] | None = None,
        transition: str = "linear",
        transition_steps: int = 1000,
        replay: float = 0.0,
        replay_by: str = "phase",
        val_per_family: int = 100,
        small_share: float = 0.25,
        heldout_params: bool = False,
        seed: int = 0,
        val_seed: int = 12345,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        check_int("window", window, min_value=2, max_value=64)
        check_int("min_terms", min_terms, min_value=2, max_value=window + 1)
        names = list(FAMILIES) if families is None else list(families)
        check(len(names) > 0, "families", families, "must name at least one family")
        for name in names:
            check_choice("families", name, FAMILIES)
        check_positive_int("batch_size", batch_size)
        check_choice("replay_by", replay_by, ("phase", "family"))
        check_positive_int("val_per_family", val_per_family)
        check_float("small_share", small_share, 0.0, 1.0, high_inclusive=False)
        check(isinstance(heldout_params, bool), "heldout_params", heldout_params, "must be a bool")
        check_int("seed", seed)
        check_int("val_seed", val_seed)
        check_int("num_workers", num_workers, min_value=0)
        # the phases that have families here; PhaseSchedule checks phase_steps against them
        present = sorted({FAMILIES[n].phase for n in names})
        phase_steps = [2000, 4000][: len(present) - 1] if phase_steps is None else phase_steps
        self.schedule = PhaseSchedule(
            [PHASE_NAMES[p - 1] for p in present],
            list(phase_steps),
            transition,
            transition_steps,
            replay,
            [sum(FAMILIES[n].phase == p for n in names) for p in present]
            if replay_by == "family"
            else None,
        )
        self.curriculum = self.schedule  # logged by CurriculumLog
        self.names, self.present = names, present
        self.save_hyperparameters()
        self._val: list[dict] | None = None
        self._heldout: list[dict] | None = None

    @property
    def length(self) -> int:
        return self.hparams.window + 1

    @property
    def train_split(self) -> str:
        return "train" if self.hparams.heldout_params else "all"

    def model_args(self) -> dict:
        return {
            "max_len": self.hparams.window,
            "family_names": self.names,
            "family_phases": [FAMILIES[n].phase for n in self.names],
        }

    def batch_maker(self) -> SequenceBatchMaker:
        hp = self.hparams
        return SequenceBatchMaker(
            self.names,
            self.schedule,
            self.present,
            hp.batch_size,
            self.length,
            hp.min_terms if hp.variable_length else None,
            hp.small_share,
            self.train_split,
        )

    def train_dataloader(self):
        # lit_loops.data.train_stream's loader, the maker called once per STEPS_PER_CALL steps
        rank, step = trainer_rank_and_step(self)
        stream = MultiStepBatches(self.batch_maker(), self.hparams.seed, rank, start_step=step)
        return stream_loader(stream, self.hparams.num_workers)

    def val_batches(self) -> list[dict]:
        """``val_per_family`` full-length sequences of every family, one batch per family."""
        if self._val is None:
            g = torch.Generator().manual_seed(self.hparams.val_seed)
            n, split = self.hparams.val_per_family, self.train_split
            self._val = [
                make_batch(self.names, torch.full((n,), f), g, self.length, split=split)
                for f in range(len(self.names))
            ]
        return self._val

    def heldout_batches(self) -> list[dict]:
        """``val_per_family`` full-length held-out sequences (``heldout.py``) of every family
        that has some at this length, one batch per family ([] without ``heldout_params``)."""
        if self._heldout is None:
            self._heldout = []
            if self.hparams.heldout_params:
                g = torch.Generator().manual_seed(self.hparams.val_seed + 1)
                n = self.hparams.val_per_family
                for f, name in enumerate(self.names):
                    if len(family_bank(name, self.length, 0.0, "heldout")[0]):
                        family = torch.full((n,), f)
                        batch = make_batch(self.names, family, g, self.length, split="heldout")
                        self._heldout.append(batch)
        return self._heldout

    def val_dataloader(self):
        if self.hparams.heldout_params:
            return [fixed_loader(self.val_batches()), fixed_loader(self.heldout_batches())]
        return fixed_loader(self.val_batches())

    test_dataloader = val_dataloader
