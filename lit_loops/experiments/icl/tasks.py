"""Function classes for in-context learning (Garg et al. 2022), sampled in batches.

Every prompt draws its own function ``f`` and ``n`` inputs ``x``; the model sees
``x_1, f(x_1), ..., x_n, f(x_n)`` and predicts each ``f(x_i)`` from what came before.

Inputs live in ``d`` dimensions, of which the first ``d_active`` are used (the dimension
curriculum): the rest are zero, as in Garg et al., so the model's read-in never changes
shape. Everything is vectorised over the batch and runs on the generator's device.

Input distributions (``XDist``): ``standard`` (``N(0, I)``, training), and the
out-of-distribution evaluations ``skewed`` (``N(0, Σ)``, Σ with a random eigenbasis and
eigenvalues ``∝ 1/i²`` scaled to trace ``d_active``, as Garg et al.), ``scaled``
(``scale * N(0, I)``). ``noisy_y`` noise and the opposite-orthant queries are applied by
the evaluation on top of these (see ``scripts/icl_eval.py``).

Normalisation (``Task.normaliser``): the squared error is divided by ``d_active`` for
(noisy) linear regression and ReLU nets, by ``k`` for sparse regression (the zero
predictor's expected error ``E[y²]``, so it scores about 1), and by 1 for trees (unit
variance leaves), as Garg et al.'s plotting code normalises (``d``, the sparsity, 1) and
Yang et al. report (sparse errors "/ k"). ReLU nets were divided by 1 before issue 20, so
their older numbers read ``d`` times these.
"""

from __future__ import annotations

import math

import torch

from lit_loops.checks import check, check_choice, check_float, check_positive_int

X_DISTS = ("standard", "skewed", "scaled")


def sample_xs(
    g: torch.Generator,
    batch: int,
    n_points: int,
    d: int,
    d_active: int | None = None,
    dist: str = "standard",
    scale: float = 1.0,
) -> torch.Tensor:
    """``(batch, n_points, d)`` inputs; coordinates ``>= d_active`` are 0."""
    d_active = d if d_active is None else d_active
    check_choice("x_dist", dist, X_DISTS)
    device = g.device
    xs = torch.randn(batch, n_points, d_active, generator=g, device=device)
    if dist == "skewed":
        # Σ^{1/2} = U diag(sqrt(λ)) U^T, one random orthogonal U per prompt.
        eig = 1.0 / torch.arange(1, d_active + 1, device=device, dtype=xs.dtype) ** 2
        eig = eig * d_active / eig.sum()
        q, _ = torch.linalg.qr(torch.randn(batch, d_active, d_active, generator=g, device=device))
        xs = xs @ (q * eig.sqrt()) @ q.transpose(1, 2)  # (B, n, d_a)
    elif dist == "scaled":
        xs = xs * scale
    if d_active < d:
        xs = torch.cat([xs, xs.new_zeros(batch, n_points, d - d_active)], dim=-1)
    return xs


class Task:
    """A function class. ``function(g, batch, d_active)`` draws one function per prompt (a
    tuple of tensors); ``apply(function, xs, g)`` evaluates it on ``xs (B, n, d)`` giving
    ``ys (B, n)`` (``g`` draws the label noise of noisy tasks). ``sample`` does both."""

    name = "task"

    def function(self, g: torch.Generator, batch: int, d_active: int) -> tuple:
        raise NotImplementedError

    def apply(self, function: tuple, xs: torch.Tensor, g: torch.Generator | None = None):
        raise NotImplementedError

    def sample(self, g: torch.Generator, xs: torch.Tensor, d_active: int) -> torch.Tensor:
        return self.apply(self.function(g, xs.shape[0], d_active), xs, g)

    def normaliser(self, d_active: int) -> float:
        return 1.0


class LinearRegression(Task):
    """``y = w·x``, ``w ~ N(0, I_{d_active})``."""

    name = "linear_regression"

    def function(self, g: torch.Generator, batch: int, d_active: int) -> tuple:
        return (torch.randn(batch, d_active, generator=g, device=g.device),)  # w: (B, d_a)

    def apply(self, function: tuple, xs: torch.Tensor, g: torch.Generator | None = None):
        (w,) = function
        return (xs[..., : w.shape[1]] @ w.unsqueeze(-1)).squeeze(-1)  # (B, n)

    def normaliser(self, d_active: int) -> float:
        return float(d_active)


class SparseLinearRegression(LinearRegression):
    """``y = w·x`` with ``k`` nonzero weights ``~ N(0, 1)`` on a uniformly random support."""

    name = "sparse_linear_regression"

    def __init__(self, sparsity: int = 3) -> None:
        check_positive_int("sparsity", sparsity)
        self.sparsity = sparsity

    def function(self, g: torch.Generator, batch: int, d_active: int) -> tuple:
        check(
            self.sparsity <= d_active,
            "sparsity",
            self.sparsity,
            f"must not exceed the active dimension ({d_active})",
        )
        w = torch.randn(batch, d_active, generator=g, device=g.device)
        # The k smallest of d uniform keys: a uniformly random k-subset per prompt.
        keys = torch.rand(batch, d_active, generator=g, device=g.device)
        support = keys.argsort(dim=1)[:, : self.sparsity]  # (B, k)
        mask = torch.zeros_like(w).scatter_(1, support, 1.0)
        return (w * mask,)

    def normaliser(self, d_active: int) -> float:
        return float(min(self.sparsity, d_active))


class NoisyLinearRegression(LinearRegression):
    """``y = w·x + noise_std * ε`` (noise drawn from ``g`` when one is given).

    ``noise_std`` 0.1 is the official setting (Yang et al.'s noisy_LR configs). With
    ``renormalize_ys`` the noisy ``ys`` are rescaled by ``sqrt(d_active) / std(ys)``, the
    standard deviation taken over the whole batch, as Garg et al.'s noisy evaluation
    (``NoisyLinearRegression(renormalize_ys=True)``) does."""

    name = "noisy_linear_regression"

    def __init__(self, noise_std: float = 0.1, renormalize_ys: bool = False) -> None:
        check_float("noise_std", noise_std, 0.0)
        check(isinstance(renormalize_ys, bool), "renormalize_ys", renormalize_ys, "must be a bool")
        self.noise_std, self.renormalize_ys = noise_std, renormalize_ys

    def apply(self, function: tuple, xs: torch.Tensor, g: torch.Generator | None = None):
        ys = super().apply(function, xs)  # (B, n)
        if g is not None:
            ys = ys + self.noise_std * torch.randn(ys.shape, generator=g, device=g.device)
        if self.renormalize_ys:  # torch.std: unbiased, over every prompt and point, as Garg
            ys = ys * math.sqrt(function[0].shape[1]) / ys.std()
        return ys


class DecisionTree(Task):
    """A random binary tree of ``depth`` (Garg et al.): internal node ``i`` tests one
    random coordinate, going right when it is > 0; the ``2^depth`` leaves hold values
    ``~ N(0, 1)``. Nodes are stored heap-style: the children of ``i`` are ``2i+1, 2i+2``."""

    name = "decision_tree"

    def __init__(self, depth: int = 4) -> None:
        check_positive_int("depth", depth)
        self.depth = depth

    def function(self, g: torch.Generator, batch: int, d_active: int) -> tuple:
        n_nodes = 2 ** (self.depth + 1) - 1
        coord = torch.randint(0, d_active, (batch, n_nodes), generator=g, device=g.device)
        value = torch.randn(batch, n_nodes, generator=g, device=g.device)
        return coord, value

    def apply(self, function: tuple, xs: torch.Tensor, g: torch.Generator | None = None):
        coord, value = function  # (B, nodes) each
        node = torch.zeros(xs.shape[:2], dtype=torch.long, device=xs.device)  # (B, n)
        for _ in range(self.depth):
            c = coord.gather(1, node)  # (B, n): the coordinate each point's node tests
            right = xs.gather(2, c.unsqueeze(-1)).squeeze(-1) > 0
            node = 2 * node + 1 + right.long()
        return value.gather(1, node)


class ReluNet(Task):
    """A 2-layer ReLU net, ``y = sqrt(2/hidden) * w2 · relu(W1 x)``, ``W1, w2 ~ N(0, 1)``."""

    name = "relu_2nn_regression"

    def __init__(self, hidden: int = 100) -> None:
        check_positive_int("hidden", hidden)
        self.hidden = hidden

    def function(self, g: torch.Generator, batch: int, d_active: int) -> tuple:
        w1 = torch.randn(batch, d_active, self.hidden, generator=g, device=g.device)
        w2 = torch.randn(batch, self.hidden, 1, generator=g, device=g.device)
        return w1, w2

    def apply(self, function: tuple, xs: torch.Tensor, g: torch.Generator | None = None):
        w1, w2 = function
        h = torch.relu(xs[..., : w1.shape[1]] @ w1)  # (B, n, hidden)
        return math.sqrt(2 / self.hidden) * (h @ w2).squeeze(-1)

    def normaliser(self, d_active: int) -> float:
        # E[y²] = (2 / hidden) * hidden * E[relu(w·x)²] = E[(w·x)²] = d_active
        return float(d_active)


TASKS = {
    cls.name: cls
    for cls in (
        LinearRegression,
        SparseLinearRegression,
        NoisyLinearRegression,
        DecisionTree,
        ReluNet,
    )
}


def make_task(
    name: str,
    sparsity: int = 3,
    noise_std: float = 0.1,
    depth: int = 4,
    hidden: int = 100,
    renormalize_ys: bool = False,
) -> Task:
    """The task ``name`` with its own options (the others are ignored)."""
    check_choice("task", name, TASKS)
    if name == SparseLinearRegression.name:
        return SparseLinearRegression(sparsity)
    if name == NoisyLinearRegression.name:
        return NoisyLinearRegression(noise_std, renormalize_ys)
    if name == DecisionTree.name:
        return DecisionTree(depth)
    if name == ReluNet.name:
        return ReluNet(hidden)
    return LinearRegression()


def interleave(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """The prompt ``x_1, (y_1, 0, ..., 0), x_2, ...``: ``(B, n, d), (B, n) -> (B, 2n, d)``.

    The model's prediction of ``y_i`` is read at the position of ``x_i`` (index ``2i``).
    """
    B, n, d = xs.shape
    ys_wide = torch.cat([ys.unsqueeze(-1), xs.new_zeros(B, n, d - 1)], dim=-1)  # (B, n, d)
    return torch.stack([xs, ys_wide], dim=2).reshape(B, 2 * n, d)
