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

from lit_loops.checks import check, check_choice, check_float, check_int, check_positive_int
from lit_loops.data import fixed_loader, train_stream
from lit_loops.experiments.sequences.banks import family_bank, generate_rows
from lit_loops.experiments.sequences.families import FAMILIES
from lit_loops.schedules import PhaseSchedule

PHASE_NAMES = ("phase1", "phase2", "phase3")


class SequenceBatchMaker:
    """Picklable ``make(generator, step) -> batch`` for the training stream."""

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

    def __call__(self, g: torch.Generator, step: int = 0) -> dict:
        B, length = self.batch_size, self.length
        phase = self.schedule.sample(step, B, g)  # (B,) index into the schedule's phases
        family = torch.empty(B, dtype=torch.long)
        for p, members in enumerate(self.by_phase):
            rows = phase == p
            if rows.any():
                family[rows] = members[torch.randint(len(members), (int(rows.sum()),), generator=g)]
        return make_batch(
            self.families, family, g, length, self.min_terms, self.small_share, self.split
        )


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
            (0, the document's schedule, drops them).
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
        return train_stream(self, self.batch_maker())

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
