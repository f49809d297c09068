"""On-the-fly batch streams shared by every experiment.

A training stream yields whole batches made by a ``BatchMaker`` (a picklable callable
``make(generator, step) -> batch`` that uses vectorised torch ops; ``step`` is the batch's
global index, for curricula that change with it). Each batch gets its own
``torch.Generator`` seeded from ``(seed, rank, step)``:

* ``step`` is the global index of the batch in the run, so dataloader worker ``w`` of
  ``W`` makes steps ``w, w + W, w + 2W, ...`` and the DataLoader's round-robin puts them
  back in order: workers never repeat each other, and the stream is the same whatever the
  number of workers;
* ``rank`` separates the processes of a distributed run;
* ``start_step`` lets a resumed run continue the stream where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from lit_loops.lightning_internals import batches_drawn

BatchMaker = Callable[[torch.Generator, int], Any]


def batch_seed(seed: int, rank: int, step: int) -> int:
    """A well-mixed 63-bit seed for one batch (SeedSequence avoids correlated streams)."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(2, np.uint64)[0]) >> 1


def generator_for(seed: int, rank: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(batch_seed(seed, rank, step))


class OnTheFlyBatches(IterableDataset):
    """An endless stream of generated batches (use with ``batch_size=None``)."""

    def __init__(
        self, make_batch: BatchMaker, seed: int, rank: int = 0, start_step: int = 0
    ) -> None:
        super().__init__()
        self.make_batch = make_batch
        self.seed = seed
        self.rank = rank
        self.start_step = start_step

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        step = self.start_step + worker
        while True:
            yield self.make_batch(generator_for(self.seed, self.rank, step), step)
            step += num_workers


def stream_loader(dataset: OnTheFlyBatches, num_workers: int = 0) -> DataLoader:
    """A DataLoader over a batch stream: batches are already whole, so no collation."""
    return DataLoader(
        dataset,
        batch_size=None,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )


def trainer_rank_and_step(datamodule: Any) -> tuple[int, int]:
    """(global rank, training batches already drawn) of the attached Trainer; (0, 0) with none.

    The batch count, not ``global_step``: they differ when gradients are accumulated (k
    batches per optimizer step), and a resumed run must go on with the next batch.
    """
    trainer = getattr(datamodule, "trainer", None)
    if trainer is None:
        return 0, 0
    return trainer.global_rank, batches_drawn(trainer)


def train_stream(datamodule: Any, make_batch: BatchMaker) -> DataLoader:
    """A DataModule's training loader: ``make_batch``'s stream, seeded by its
    ``hparams.seed`` and the attached Trainer's rank, going on from the batches already
    drawn (a resumed run), with ``hparams.num_workers`` workers."""
    rank, step = trainer_rank_and_step(datamodule)
    hp = datamodule.hparams
    return stream_loader(
        OnTheFlyBatches(make_batch, hp.seed, rank, start_step=step), hp.num_workers
    )


class FixedBatches(torch.utils.data.Dataset):
    """A validation set drawn once, served as ready-made batches (use with ``batch_size=None``)."""

    def __init__(self, batches: list[Any]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> Any:
        return self.batches[index]


def fixed_loader(batches: list[Any]) -> DataLoader:
    return DataLoader(FixedBatches(batches), batch_size=None, shuffle=False)
