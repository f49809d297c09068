"""Classical in-context baselines for the ICL tasks of Garg et al. 2022.

"What Can Transformers Learn In-Context? A Case Study of Simple Function Classes"
(arXiv:2208.01066); their baselines live in ``src/models.py`` of ``dtsip/in-context-learning``
(``LeastSquaresModel``, ``AveragingModel``, ``NNModel`` = k-NN, ``LassoModel``,
``DecisionTreeModel``, ``XGBoostModel``, ``GDModel``), with the per-task lists in
``get_relevant_baselines``. Settings below follow that file and are cited where they matter.

A prompt is ``xs`` (B, n, d) and ``ys`` (B, n). Every baseline is ``name(xs, ys, **options)``
and returns ``preds`` (B, n), a float32 CPU tensor, where ``preds[:, i]`` is the prediction for
``ys[:, i]`` from ``xs[:, :i], ys[:, :i]`` and the query ``xs[:, i]`` only; ``preds[:, 0] = 0``
(no examples yet), as in Garg et al.

zero, least squares, averaging and k-NN are cheap and vectorised in torch. The others fit one
model per prompt per prefix, ``B * (n - 1)`` fits: a loop over sklearn / xgboost fits as in
Garg et al., or, for nn_gd, all the nets trained at once in torch. They are listed in
``EXPENSIVE`` so that callers can evaluate them on fewer prompts.
"""

from __future__ import annotations

import importlib
import math
import warnings
from collections.abc import Callable
from functools import partial
from types import ModuleType
from typing import Any

import numpy as np
import torch

Baseline = Callable[..., torch.Tensor]

# Garg et al., get_relevant_baselines("sparse_linear_regression").
LASSO_ALPHAS = (1.0, 0.1, 0.01, 0.001, 0.0001)
# Yang et al.'s notebooks (jupyter_notebooks/utils.py): the finer grid.
LASSO_ALPHAS_YANG = (1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001, 0.0003, 0.0001)
# Garg et al., LassoModel(max_iter=100000).
LASSO_MAX_ITER = 100_000

_INSTALL_HINT = (
    "pip install scikit-learn xgboost-cpu (or `make install`, which installs the `baselines` extra)"
)

# nn_gd holds a few (prompts, n - 1, n, hidden) activations for autograd; chunk over prompts
# so that one of them stays under this many elements (~100 MB in float32).
_NN_GD_CHUNK_ELEMENTS = 25_000_000


# --- helpers -------------------------------------------------------------------------------
def _prompt(xs: torch.Tensor, ys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Check shapes; return float32 CPU copies detached from any graph."""
    if xs.dim() != 3 or ys.dim() != 2 or xs.shape[:2] != ys.shape:
        raise ValueError(
            f"expected xs (B, n, d) and ys (B, n), got xs {tuple(xs.shape)}, ys {tuple(ys.shape)}"
        )
    return xs.detach().cpu().float(), ys.detach().cpu().float()


def _require(module: str, baseline: str) -> ModuleType:
    """Import an optional dependency lazily, so the cheap baselines work without it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"the {baseline!r} baseline needs {module}: {_INSTALL_HINT}") from e


def _fit_per_prefix(
    xs: torch.Tensor,
    ys: torch.Tensor,
    fit_predict: Callable[[np.ndarray, np.ndarray, np.ndarray], float],
) -> torch.Tensor:
    """Loop over prompts and prefixes: ``preds[b, i] = fit_predict(x[b, :i], y[b, :i], x[b, i])``."""
    xs, ys = _prompt(xs, ys)
    x, y = xs.double().numpy(), ys.double().numpy()
    batch, n = ys.shape
    preds = np.zeros((batch, n))
    for b in range(batch):
        for i in range(1, n):
            preds[b, i] = fit_predict(x[b, :i], y[b, :i], x[b, i : i + 1])
    return torch.from_numpy(preds).float()


# --- vectorised baselines ------------------------------------------------------------------
def zero(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Predict 0 everywhere: the trivial baseline (error = E[y^2], the "1.0" line in Garg et al.)."""
    xs, ys = _prompt(xs, ys)
    return torch.zeros_like(ys)


def least_squares(xs: torch.Tensor, ys: torch.Tensor, driver: str = "gelsd") -> torch.Tensor:
    """Min-norm least squares on the prefix (Garg et al. ``LeastSquaresModel``).

    Exact from ``i = d`` on for noiseless linear ``y``. Solved in float64 (``i = d`` is a square
    random system whose conditioning float32 can't always take) with an SVD driver, so that
    under-determined prefixes (``i < d``) get the minimum-norm solution, batched over prompts.
    """
    xs, ys = _prompt(xs, ys)
    x, y = xs.double(), ys.double()
    preds = torch.zeros_like(y)
    for i in range(1, y.shape[1]):
        w = torch.linalg.lstsq(x[:, :i], y[:, :i, None], driver=driver).solution  # (B, d, 1)
        preds[:, i] = (x[:, i : i + 1] @ w)[:, 0, 0]
    return preds.float()


def averaging(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """``w = mean_{j<i} y_j x_j``, ``pred = x_i . w`` (Garg et al. ``AveragingModel``).

    One exclusive cumulative sum gives every prefix mean at once.
    """
    xs, ys = _prompt(xs, ys)
    n = ys.shape[1]
    sums = torch.cumsum(xs * ys[..., None], dim=1)  # sums[:, i] = sum_{j<=i} y_j x_j
    prefix_sums = torch.cat([torch.zeros_like(sums[:, :1]), sums[:, :-1]], dim=1)  # j < i
    counts = torch.arange(n, dtype=xs.dtype).clamp(min=1)[None, :, None]
    return ((prefix_sums / counts) * xs).sum(-1)  # i = 0: an empty sum, 0


def nearest_neighbours(xs: torch.Tensor, ys: torch.Tensor, k: int = 3) -> torch.Tensor:
    """Mean ``y`` of the ``k`` Euclidean-nearest prefix points, all of them when ``i < k``.

    Garg et al. ``NNModel(n_neighbors=3)`` with uniform weights.
    """
    if k < 1:
        raise ValueError(f"k={k!r} is invalid: at least 1")
    xs, ys = _prompt(xs, ys)
    n = ys.shape[1]
    # The direct formula, not the matmul one, so that a repeated point is at distance exactly 0.
    dist = torch.cdist(xs, xs, compute_mode="donot_use_mm_for_euclid_dist")  # (B, query, key)
    future = torch.ones(n, n, dtype=torch.bool).triu()  # key j >= query i is not in the prefix
    dist = dist.masked_fill(future, math.inf)
    kk = min(k, n)
    near_dist, near = dist.topk(kk, dim=-1, largest=False)  # (B, n, kk)
    near_y = torch.gather(ys[:, None, :].expand(-1, n, -1), 2, near)
    valid = torch.isfinite(near_dist)  # fewer than k prefix points: the rest are +inf
    count = valid.sum(-1).clamp(min=1)
    return torch.where(valid, near_y, 0.0).sum(-1) / count


def nn_gd(
    xs: torch.Tensor,
    ys: torch.Tensor,
    hidden: int = 100,
    steps: int = 100,
    lr: float = 5e-3,
    batch_size: int = 100,
    seed: int = 0,
    chunk: int | None = None,
) -> torch.Tensor:
    """A 2-layer ReLU net trained with Adam on each prefix (Garg et al. ``GDModel``).

    Their relu_2nn_regression setting: ``NeuralNetwork(hidden_size=100)`` (Linear-ReLU-Linear),
    ``opt_alg="adam"``, ``lr=5e-3``, ``num_steps=100``, ``batch_size=100`` (a random subset of
    the prefix per step once ``i > 100``; full batch below), MSE loss, a fresh net per prefix,
    PyTorch's default ``nn.Linear`` init. Here all ``B * (n - 1)`` nets are trained at once as
    batched weights, each on its own prompt with its loss masked to its prefix; Adam is
    elementwise, so this is the same as training them one by one. Deterministic given ``seed``.
    """
    xs, ys = _prompt(xs, ys)
    batch, n, d = xs.shape
    if n < 2:
        return torch.zeros(batch, n)
    if chunk is None:
        chunk = max(1, _NN_GD_CHUNK_ELEMENTS // ((n - 1) * n * hidden))
    gen = torch.Generator().manual_seed(seed)
    # Train even when called from validation code, which runs under no_grad / inference_mode.
    with torch.inference_mode(False), torch.enable_grad():
        xs, ys = xs.clone(), ys.clone()  # inference tensors can't be saved for backward
        preds = torch.zeros(batch, n)
        for start in range(0, batch, chunk):
            stop = start + chunk
            preds[start:stop] = _nn_gd_chunk(
                xs[start:stop], ys[start:stop], hidden, steps, lr, batch_size, gen
            )
    return preds


def _nn_gd_chunk(
    xs: torch.Tensor,
    ys: torch.Tensor,
    hidden: int,
    steps: int,
    lr: float,
    batch_size: int,
    gen: torch.Generator,
) -> torch.Tensor:
    batch, n, d = xs.shape
    m = n - 1  # one net per prefix length i = 1 .. n-1, net m' sees positions j < m' + 1
    positions = torch.arange(n)
    prefix = positions[None, :] < torch.arange(1, n)[:, None]  # (m, n)
    count = prefix.sum(-1).clamp(max=batch_size).float()  # points per step, per net

    def uniform(*shape: int, fan_in: int) -> torch.Tensor:
        # nn.Linear's default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases.
        bound = 1.0 / math.sqrt(fan_in)
        w = (torch.rand(*shape, generator=gen) * 2 - 1) * bound
        return w.requires_grad_()

    w1 = uniform(batch, m, d, hidden, fan_in=d)
    b1 = uniform(batch, m, hidden, fan_in=d)
    w2 = uniform(batch, m, hidden, fan_in=hidden)
    b2 = uniform(batch, m, fan_in=hidden)
    params = [w1, b1, w2, b2]

    def forward() -> torch.Tensor:  # (batch, m, n): net (b, m') applied to every x of prompt b
        h = torch.relu(torch.einsum("bnd,bmdh->bmnh", xs, w1) + b1[:, :, None, :])
        return torch.einsum("bmnh,bmh->bmn", h, w2) + b2[..., None]

    # Zero the targets outside the prefix so that future ys never enter the arithmetic at all.
    target = torch.where(prefix, ys[:, None, :], 0.0)
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(steps):
        mask = prefix
        if m > batch_size:  # Garg et al. draw batch_size prefix points per step once i > it
            score = torch.rand(batch, m, n, generator=gen).masked_fill(~prefix, math.inf)
            kth = score.topk(batch_size, dim=-1, largest=False).values[..., -1:]
            mask = prefix & (score <= kth)
        err = torch.where(mask, forward() - target, 0.0)
        # Each net's own MSE; summing over nets keeps their gradients independent.
        loss = (err.square().sum(-1) / count).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        out = forward()
    return torch.cat([torch.zeros(batch, 1), out[:, positions[:-1], positions[1:]]], dim=1)


# --- per-prompt, per-prefix model fits (sklearn / xgboost) ----------------------------------
def lasso(
    xs: torch.Tensor, ys: torch.Tensor, alpha: float = 0.01, max_iter: int = LASSO_MAX_ITER
) -> torch.Tensor:
    """Lasso without intercept on each prefix (Garg et al. ``LassoModel``).

    sklearn's objective ``||y - Xw||^2 / (2 i) + alpha ||w||_1``; ``max_iter=100000`` as Garg
    et al. They raise on a convergence warning; here it is silenced (the iterate is still used),
    so that one hard prefix does not abort an evaluation.
    """
    linear_model = _require("sklearn.linear_model", "lasso")
    exceptions = _require("sklearn.exceptions", "lasso")

    def fit_predict(x: np.ndarray, y: np.ndarray, query: np.ndarray) -> float:
        model = linear_model.Lasso(alpha=alpha, fit_intercept=False, max_iter=max_iter)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", exceptions.ConvergenceWarning)
            model.fit(x, y)
        return float(query[0] @ model.coef_)

    return _fit_per_prefix(xs, ys, fit_predict)


def greedy_tree(
    xs: torch.Tensor,
    ys: torch.Tensor,
    max_depth: int | None = None,
    random_state: int = 0,
    on_sign: bool = False,
) -> torch.Tensor:
    """CART regression tree (sklearn ``DecisionTreeRegressor``) on each prefix.

    Garg et al. ``DecisionTreeModel`` ("Greedy Tree Learning" in their plots); they evaluate
    ``max_depth=4`` and ``None``. Yang et al.'s figures use depth 2 on ``x`` and depth 4 on
    ``sign(x)`` (``on_sign``: the tree sees ``sign(x)``, the features the task's trees split
    on). ``random_state`` fixes sklearn's tie-breaking between features.
    """
    tree = _require("sklearn.tree", "greedy_tree")
    if on_sign:
        xs = xs.sign()

    def fit_predict(x: np.ndarray, y: np.ndarray, query: np.ndarray) -> float:
        model = tree.DecisionTreeRegressor(max_depth=max_depth, random_state=random_state)
        return float(model.fit(x, y).predict(query)[0])

    return _fit_per_prefix(xs, ys, fit_predict)


def xgboost(
    xs: torch.Tensor, ys: torch.Tensor, on_sign: bool = False, **options: Any
) -> torch.Tensor:
    """Gradient-boosted trees (``xgboost.XGBRegressor``) on each prefix (on ``sign(x)`` with
    ``on_sign``, as one of Yang et al.'s; their setting: depth 4, learning rate 0.1, 50 trees).

    Garg et al. ``XGBoostModel`` uses ``XGBRegressor()`` with the defaults of xgboost 1.x:
    100 trees, depth 6, learning rate 0.3, ``base_score=0.5`` and, on data this small, the
    ``exact`` tree method. Those are pinned here, on one CPU thread; ``options`` override them.
    xgboost >= 2 defaults to ``hist`` instead, whose thresholds are training values rather than
    midpoints between them: on a 1-d step with ~10 points it misplaces queries between the
    boundary and the nearest training point that ``exact`` gets right.
    """
    xgb = _require("xgboost", "xgboost")
    kwargs: dict[str, Any] = {
        "n_estimators": 100,
        "max_depth": 6,
        "learning_rate": 0.3,
        "base_score": 0.5,
        "tree_method": "exact",
        "n_jobs": 1,
    }
    kwargs.update(options)
    if on_sign:
        xs = xs.sign()

    def fit_predict(x: np.ndarray, y: np.ndarray, query: np.ndarray) -> float:
        model = xgb.XGBRegressor(**kwargs)
        return float(model.fit(x, y).predict(query)[0])

    return _fit_per_prefix(xs, ys, fit_predict)


# --- registries ----------------------------------------------------------------------------
def _lasso_name(alpha: float) -> str:
    return f"lasso_{alpha:g}"


# Yang et al.'s tree and ReLU-net figures (issue 20): XGBoost with 50 trees of depth 4 at
# learning rate 0.1, on x and on sign(x); the GD-trained net at batch 10 for 1000 steps.
_XGBOOST_YANG = {"n_estimators": 50, "max_depth": 4, "learning_rate": 0.1}

BASELINES: dict[str, Baseline] = {
    "zero": zero,
    "least_squares": least_squares,
    "averaging": averaging,
    "3nn": partial(nearest_neighbours, k=3),
    **{_lasso_name(a): partial(lasso, alpha=a) for a in LASSO_ALPHAS + LASSO_ALPHAS_YANG},
    "greedy_tree": greedy_tree,  # max_depth=None
    "greedy_tree_depth4": partial(greedy_tree, max_depth=4),
    "greedy_tree_depth2": partial(greedy_tree, max_depth=2),
    "greedy_tree_sign_depth4": partial(greedy_tree, max_depth=4, on_sign=True),
    "xgboost": xgboost,
    "xgboost_yang": partial(xgboost, **_XGBOOST_YANG),
    "xgboost_yang_sign": partial(xgboost, on_sign=True, **_XGBOOST_YANG),
    "nn_gd": nn_gd,
    "nn_gd_yang": partial(nn_gd, batch_size=10, steps=1000),
}

_LINEAR = ["least_squares", "averaging", "3nn", "zero"]
# Garg et al.'s baselines per task (get_relevant_baselines): the default setting.
BASELINES_FOR_TASK: dict[str, list[str]] = {
    "linear_regression": list(_LINEAR),
    "sparse_linear_regression": _LINEAR + [_lasso_name(a) for a in LASSO_ALPHAS],
    "noisy_linear_regression": list(_LINEAR),
    "decision_tree": ["greedy_tree", "xgboost", "3nn", "least_squares", "averaging", "zero"],
    "relu_2nn_regression": ["nn_gd", "least_squares", "3nn", "averaging", "zero"],
}
# Yang et al.'s figures (Leiay/looped_transformer, the notebooks and the paper's captions).
BASELINES_FOR_TASK_YANG: dict[str, list[str]] = {
    "linear_regression": list(_LINEAR),
    "sparse_linear_regression": _LINEAR + [_lasso_name(a) for a in LASSO_ALPHAS_YANG],
    "noisy_linear_regression": list(_LINEAR),
    "decision_tree": [
        "greedy_tree_depth2",
        "greedy_tree_sign_depth4",
        "xgboost_yang",
        "xgboost_yang_sign",
        "3nn",
        "least_squares",
        "averaging",
        "zero",
    ],
    "relu_2nn_regression": ["nn_gd_yang", "least_squares", "3nn", "averaging", "zero"],
}
# The named settings ``scripts/icl_eval.py --baselines-from`` chooses between.
BASELINE_SETTINGS: dict[str, dict[str, list[str]]] = {
    "garg": BASELINES_FOR_TASK,
    "yang": BASELINES_FOR_TASK_YANG,
}

# Baselines that fit a model per prompt per prefix: callers may cap the number of prompts.
EXPENSIVE: frozenset[str] = frozenset(
    [_lasso_name(a) for a in LASSO_ALPHAS + LASSO_ALPHAS_YANG]
    + [name for name in BASELINES if name.startswith(("greedy_tree", "xgboost", "nn_gd"))]
)
