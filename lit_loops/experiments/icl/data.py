"""Prompts of an in-context learning task, sampled on the training device.

The training stream carries only what a batch needs to be drawn: a 63-bit seed from the
shared on-the-fly stream (``lit_loops.data``: one per rank and step, so ranks and workers
never repeat each other), and the curriculum's current dimension and prompt length.
``ICLDataModule.on_after_batch_transfer`` draws the prompts on the device the batch was
moved to, with a generator seeded from it: no prompt is ever made on the CPU and copied.
``materialize(batch, device)`` does the same by hand (e.g. in a notebook).

Validation prompts are drawn once on the CPU from ``val_seed`` at the full dimension and
length (the end of the curriculum), so every run and every rank scores the same set.
"""

from __future__ import annotations

import lightning as L
import torch

from lit_loops.checks import check_int, check_positive_int
from lit_loops.data import fixed_loader, train_stream
from lit_loops.experiments.icl.tasks import SparseLinearRegression, Task, make_task, sample_xs
from lit_loops.schedules import Curricula, StepSchedule


def draw_prompts(task: Task, g: torch.Generator, batch: int, points: int, d: int, dims: int):
    """One batch: ``{"xs": (B, points, d), "ys": (B, points), "norm": normaliser}``."""
    xs = sample_xs(g, batch, points, d, dims)
    ys = task.sample(g, xs, dims)
    return {"xs": xs, "ys": ys, "norm": task.normaliser(dims)}


class ICLBatchSpec:
    """The training stream's batch maker: a seed and the curriculum's sizes for the step."""

    def __init__(self, dims: StepSchedule, points: StepSchedule) -> None:
        self.dims, self.points = dims, points

    def __call__(self, g: torch.Generator, step: int) -> dict:
        seed = int(torch.randint(0, 2**62, (), generator=g))
        return {"seed": seed, "dims": self.dims.value(step), "points": self.points.value(step)}


class ICLDataModule(L.LightningDataModule):
    """Prompts ``x_1, y_1, ..., x_n, y_n`` of one function class (see ``tasks.py``).

    Args:
        task: ``linear_regression``, ``sparse_linear_regression``,
            ``noisy_linear_regression``, ``decision_tree`` or ``relu_2nn_regression``.
        d: input dimension (the model's read-in width).
        n_points: examples per prompt at the end of the curriculum.
        batch_size: prompts per training step.
        sparsity, noise_std, depth, hidden: the options of the sparse, noisy, tree and
            ReLU-net tasks (the others ignore them). ``noise_std`` 0.1 is the official one.
        renormalize_ys: the noisy task rescales each prompt's ``w·x`` to std
            ``sqrt(d)`` before the noise (Garg et al.'s noisy evaluation; off in training).
        dims_start, dims_increment: the dimension curriculum: ``dims_start`` active
            dimensions, ``+dims_increment`` every ``curriculum_every`` steps up to ``d``.
            None starts at ``d`` (no curriculum).
        points_start, points_increment: the same for the prompt length, up to ``n_points``.
        curriculum_every: steps between curriculum increments.
        val_size, val_batch_size: validation prompts (full ``d`` and ``n_points``), drawn
            once from ``val_seed``.
        seed: seed of the training stream (with the rank and the step).
        num_workers: dataloader workers for the (tiny) stream of seeds.
    """

    def __init__(
        self,
        task: str = "linear_regression",
        d: int = 20,
        n_points: int = 41,
        batch_size: int = 64,
        sparsity: int = 3,
        noise_std: float = 0.1,
        depth: int = 4,
        hidden: int = 100,
        renormalize_ys: bool = False,
        dims_start: int | None = None,
        dims_increment: int = 1,
        points_start: int | None = None,
        points_increment: int = 2,
        curriculum_every: int = 2000,
        val_size: int = 1280,
        val_batch_size: int = 640,
        seed: int = 0,
        val_seed: int = 12345,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.task = make_task(task, sparsity, noise_std, depth, hidden, renormalize_ys)  # checks
        check_positive_int("d", d)
        check_positive_int("n_points", n_points)
        check_positive_int("batch_size", batch_size)
        check_positive_int("val_size", val_size)
        check_positive_int("val_batch_size", val_batch_size)
        check_int("seed", seed)
        check_int("val_seed", val_seed)
        check_int("num_workers", num_workers, min_value=0)
        check_positive_int("curriculum_every", curriculum_every)
        # StepSchedule checks start <= end (named dims_start / d, points_start / n_points).
        self.dims = StepSchedule(
            "dims", d if dims_start is None else dims_start, d, dims_increment, curriculum_every
        )
        self.points = StepSchedule(
            "points",
            n_points if points_start is None else points_start,
            n_points,
            points_increment,
            curriculum_every,
        )
        if isinstance(self.task, SparseLinearRegression):  # k must fit the first dimension
            self.task.function(torch.Generator(), 1, self.dims.start)
        self.curriculum = Curricula(self.dims, self.points)  # logged by CurriculumLog
        self.save_hyperparameters()
        self._val_batches: list[dict] | None = None

    def model_args(self) -> dict:
        return {"n_dims": self.hparams.d, "n_points": self.hparams.n_points}

    def materialize(self, batch: dict, device: torch.device | str = "cpu") -> dict:
        """Draws a training batch's prompts from its seed on ``device``."""
        if "xs" in batch:  # already drawn (validation)
            return batch
        g = torch.Generator(device=device).manual_seed(int(batch["seed"]))
        hp = self.hparams
        return draw_prompts(
            self.task, g, hp.batch_size, int(batch["points"]), hp.d, int(batch["dims"])
        )

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        device = self.trainer.strategy.root_device if self.trainer is not None else "cpu"
        return self.materialize(batch, device)

    def val_batches(self) -> list[dict]:
        if self._val_batches is None:
            hp = self.hparams
            g = torch.Generator().manual_seed(hp.val_seed)
            self._val_batches = [
                draw_prompts(
                    self.task, g, min(hp.val_batch_size, hp.val_size - i), hp.n_points, hp.d, hp.d
                )
                for i in range(0, hp.val_size, hp.val_batch_size)
            ]
        return self._val_batches

    def train_dataloader(self):
        return train_stream(self, ICLBatchSpec(self.dims, self.points))

    def val_dataloader(self):
        return fixed_loader(self.val_batches())

    test_dataloader = val_dataloader
