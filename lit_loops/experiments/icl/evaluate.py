"""Error against the number of in-context examples, for trained models and the baselines.

``evaluate(checkpoints, out_dir, ...)`` draws ``prompts`` fresh prompts of the checkpoints'
task (from the DataModule settings saved in the checkpoint, at the full dimension and
length), under one or more input distributions, and writes for every model and baseline
the normalised squared error at each number of in-context examples with a 5-95 %
bootstrap band over prompts:

* ``errors_<dist>.csv`` (``predictor, examples, mean, lo, hi``) and ``errors_<dist>.png``;
* for looped models, the error curve read at the trained ``b`` and at the papers' count
  (``read_loops``: Yang et al. read after 500 loops, 200 for trees), and ``loops.csv`` /
  ``loops.png``: the error at ``2d`` examples (or the last position) against the loop count
  ``1 .. loops_max`` (default the larger of ``4 b`` and ``read_loops``), to show whether it
  settles past the trained ``b``.

Baselines: the task's list in one of two named settings (``baselines.BASELINE_SETTINGS``):
``garg`` (Garg et al.'s ``get_relevant_baselines``, the default) or ``yang`` (Yang et al.'s
figures: greedy trees of depth 2 on x and 4 on sign(x), XGBoost 50 x depth 4 at lr 0.1 on
x and sign(x), the GD net at batch 10 for 1000 steps, Lasso on a 9-value grid).

``summary_figure(dirs, path)`` draws several tasks' ``errors_standard.csv`` side by side (the
papers' layout), e.g. ``docs/icl_tasks_cpu.png``.

Distributions: ``standard``; ``skewed`` covariance and ``scaled`` inputs (``tasks.sample_xs``);
``noisy_y`` (Gaussian noise of std ``noise`` on every ``y``, the error measured against the
noisy targets); ``orthant``: the in-context ``x`` of a prompt lie in one random orthant and
each query in the opposite one (Garg et al.'s ``opposite_quadrants``), which takes one
forward pass per query position.

Run it as ``python scripts/icl_eval.py CKPT [CKPT ...] --out DIR``.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from pathlib import Path

import torch

from lit_loops.checkpoints import load_run
from lit_loops.checks import check, check_choice, check_positive_int
from lit_loops.experiments.icl.baselines import BASELINE_SETTINGS, BASELINES, EXPENSIVE
from lit_loops.experiments.icl.data import ICLDataModule
from lit_loops.experiments.icl.module import ICLModule
from lit_loops.experiments.icl.tasks import sample_xs
from lit_loops.plots import finish_plot

DISTS = ("standard", "skewed", "scaled", "noisy_y", "orthant")
# Loops at which Yang et al. read their looped models (the paper's figures).
PAPER_READ_LOOPS = {"decision_tree": 200}
PAPER_READ_LOOPS_DEFAULT = 500
Predictor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (B,n,d),(B,n) -> (B,n)


def load(checkpoint: str | Path) -> tuple[ICLModule, ICLDataModule, str]:
    """The model (eval mode, CPU), its DataModule and a label such as ``looped L1 b12``."""
    path = Path(checkpoint)
    check(path.is_file(), "checkpoint", str(path), "must be an existing .ckpt file")
    module, data = load_run(path, name="checkpoint")  # the classes saved in the checkpoint
    check(
        isinstance(module, ICLModule) and isinstance(data, ICLDataModule),
        "checkpoint",
        str(path),
        "must be a checkpoint of an in-context learning run (configs/icl/*)",
    )
    module.eval()
    hp = module.hparams
    label = (
        f"looped L{module.net.n_layers} b{hp.loops}"
        if hp.looped
        else f"standard L{module.net.n_layers}"
    ) + f" ({module.num_parameters / 1e3:.0f}k)"
    return module, data, label


def draw(data: ICLDataModule, prompts: int, dist: str, seed: int, scale: float, noise: float):
    """``xs (B, n, d), ys (B, n), targets (B, n), norm`` for one distribution. ``targets``
    are what each prediction is scored against: ``ys``, except for ``orthant``, where
    query ``i`` is ``-x_i`` (the opposite orthant) and its target ``f(-x_i)``."""
    hp = data.hparams
    g = torch.Generator().manual_seed(seed)
    x_dist = dist if dist in ("skewed", "scaled") else "standard"
    xs = sample_xs(g, prompts, hp.n_points, hp.d, hp.d, x_dist, scale)
    if dist == "orthant":
        xs = xs.abs() * torch.randn(prompts, 1, hp.d, generator=g).sign()  # one orthant each
    function = data.task.function(g, prompts, hp.d)
    ys = data.task.apply(function, xs, g)
    if dist == "noisy_y":
        ys = ys + noise * torch.randn(ys.shape, generator=g)
    targets = data.task.apply(function, -xs, g) if dist == "orthant" else ys
    return xs, ys, targets, data.task.normaliser(hp.d)


def predict(predictor: Predictor, xs: torch.Tensor, ys: torch.Tensor, dist: str):
    """``(B, n)`` predictions; for ``orthant``, the query at ``i`` is ``-x_i``, predicted
    from a prompt whose position ``i`` holds it (one pass per ``i``; causal models and
    the baselines ignore what comes after ``i``)."""
    if dist != "orthant":
        return predictor(xs, ys)
    out = torch.empty_like(ys)
    for i in range(xs.shape[1]):
        queried = xs.clone()
        queried[:, i] = -xs[:, i]
        out[:, i] = predictor(queried, ys)[:, i]
    return out


def bootstrap(errors: torch.Tensor, resamples: int = 1000, seed: int = 0):
    """Mean over prompts of ``errors (B, n)`` with its 5 % and 95 % bootstrap quantiles."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, errors.shape[0], (resamples, errors.shape[0]), generator=g)
    means = errors[idx].mean(1)  # (resamples, n)
    lo, hi = torch.quantile(means, torch.tensor([0.05, 0.95]), dim=0)
    return errors.mean(0), lo, hi


def model_predictor(module: ICLModule, loops: int | None = None) -> Predictor:
    def run(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat(
                [
                    module.predict(x, y, loops)
                    for x, y in zip(xs.split(256), ys.split(256), strict=True)
                ]
            )

    return run


def loop_curve(module: ICLModule, xs, ys, norm: float, position: int, loops_max: int):
    """Normalised error at ``position`` after each loop ``1 .. loops_max``: ``(loops_max,)``."""
    with torch.no_grad():
        per_loop = [
            torch.stack(module.predict_each_loop(x, y, loops_max))[:, :, position]  # (L, b)
            for x, y in zip(xs.split(256), ys.split(256), strict=True)
        ]
    preds = torch.cat(per_loop, dim=1)  # (loops_max, B)
    return (preds - ys[:, position]).pow(2) / norm  # (loops_max, B)


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def distinct_colors(count: int) -> list:
    """``count`` colours, none repeated (matplotlib's 10-colour cycle repeats past 10)."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if count <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(count)]


def plot(curves: dict[str, tuple], x, xlabel: str, title: str, path: Path, mark=None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    floor = 1e-5  # log axis: exact predictions (least squares) are drawn at the floor
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.set_prop_cycle(color=distinct_colors(len(curves)))
    for name, (mean, lo, hi) in curves.items():
        style = "-" if not name.startswith(("standard", "looped")) else "-o"
        mean, lo, hi = (t.clamp(min=floor).numpy() for t in (mean, lo, hi))
        (line,) = ax.plot(x, mean, style, label=name, markersize=3)
        ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2)
    if mark is not None:
        ax.axvline(mark, color="grey", linestyle=":", linewidth=1)
    ax.set_yscale("log")
    # least squares at n = d (an exactly determined system) can read 1e4 on the nonlinear
    # tasks; the axis stops at 10x the zero predictor's ~1 so the rest stays readable
    ax.set_ylim(bottom=floor / 2, top=min(ax.get_ylim()[1], 10.0))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"squared error / normaliser (floor {floor:g})")
    finish_plot(fig, ax, path, title)


def evaluate(
    checkpoints: list[str | Path],
    out_dir: str | Path,
    prompts: int = 1280,
    dists: tuple[str, ...] = ("standard",),
    baselines: list[str] | None = None,
    expensive_prompts: int = 128,
    scale: float = 2.0,
    noise: float = 0.5,
    loops_max: int | None = None,
    seed: int = 2024,
    log: Callable[[str], None] = print,
    baseline_setting: str = "garg",
    read_loops: int | None = None,
) -> dict[str, dict[str, tuple]]:
    """Writes the CSVs and PNGs (see the module docs); returns ``{dist: {name: (mean, lo,
    hi)}}`` with ``(n,)`` tensors, plus for looped checkpoints ``"loops"`` (the same, over
    loop counts) and ``"loops_b"`` (``{name: b}``). ``baselines`` None takes the task's list
    in ``baseline_setting``; the ``EXPENSIVE`` ones (a model fitted per prompt and prefix)
    see only the first ``expensive_prompts`` prompts. ``read_loops`` (None: the papers'
    count for the task; 0: none) adds each looped model's curve read after that many
    loops, named ``<label> @<loops>``, beside the one at its ``b``."""
    check(len(checkpoints) >= 1, "checkpoints", checkpoints, "give at least one")
    check_positive_int("prompts", prompts)
    check_positive_int("expensive_prompts", expensive_prompts)
    check_choice("baseline_setting", baseline_setting, BASELINE_SETTINGS)
    if read_loops is not None:
        check(
            isinstance(read_loops, int) and read_loops >= 0,
            "read_loops",
            read_loops,
            "must be a loop count >= 0 (0: none)",
        )
    for dist in dists:
        check_choice("dist", dist, DISTS)
    loaded = [load(c) for c in checkpoints]
    data = loaded[0][1]
    for _, other, _ in loaded[1:]:
        same = {k: other.hparams[k] for k in ("task", "d", "n_points")}
        check(
            same == {k: data.hparams[k] for k in same},
            "checkpoints",
            [str(c) for c in checkpoints],
            f"must share task, d and n_points; {dict(same)} differs",
        )
    task, d = data.hparams.task, data.hparams.d
    names = BASELINE_SETTINGS[baseline_setting][task] if baselines is None else baselines
    if read_loops is None:
        read_loops = PAPER_READ_LOOPS.get(task, PAPER_READ_LOOPS_DEFAULT)
    for name in names:
        check_choice("baselines", name, BASELINES)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    examples = list(range(data.hparams.n_points))  # prediction i sees i examples
    results: dict[str, dict[str, tuple]] = {}
    for dist in dists:
        xs, ys, targets, norm = draw(data, prompts, dist, seed, scale, noise)
        curves: dict[str, tuple] = {}
        predictors = [(label, model_predictor(m), prompts) for m, _, label in loaded]
        predictors += [
            (f"{label} @{read_loops}", model_predictor(m, read_loops), prompts)
            for m, _, label in loaded
            if m.hparams.looped and read_loops and read_loops != m.hparams.loops
        ]
        predictors += [
            (n, BASELINES[n], expensive_prompts if n in EXPENSIVE else prompts) for n in names
        ]
        for name, predictor, count in predictors:
            start = time.perf_counter()
            preds = predict(predictor, xs[:count], ys[:count], dist)
            curves[name] = bootstrap((preds - targets[:count]).pow(2) / norm)
            log(f"  {dist:8s} {name:28s} {time.perf_counter() - start:7.1f} s")
        rows = [
            [name, i, f"{m:.6g}", f"{lo:.6g}", f"{hi:.6g}"]
            for name, (mean, low, high) in curves.items()
            for i, m, lo, hi in zip(
                examples, mean.tolist(), low.tolist(), high.tolist(), strict=True
            )
        ]
        write_csv(out / f"errors_{dist}.csv", ["predictor", "examples", "mean", "lo", "hi"], rows)
        title = f"{task}, d = {d}, {dist} ({prompts} prompts)"
        plot(curves, examples, "in-context examples", title, out / f"errors_{dist}.png", mark=d)
        results[dist] = curves
    looped = [(m, label) for m, _, label in loaded if m.hparams.looped]
    if looped:
        xs, ys, _, norm = draw(data, prompts, "standard", seed, scale, noise)
        position = min(2 * d, data.hparams.n_points - 1)
        curves = {}
        top = loops_max or max(read_loops, *(4 * m.hparams.loops for m, _ in looped))
        for module, label in looped:
            curves[label] = bootstrap(loop_curve(module, xs, ys, norm, position, top).T)
        rows = [
            [name, t + 1, f"{m:.6g}", f"{lo:.6g}", f"{hi:.6g}"]
            for name, (mean, low, high) in curves.items()
            for t, (m, lo, hi) in enumerate(
                zip(mean.tolist(), low.tolist(), high.tolist(), strict=True)
            )
        ]
        write_csv(out / "loops.csv", ["predictor", "loops", "mean", "lo", "hi"], rows)
        title = f"{task}, d = {d}: error at {position} examples against loops"
        b = looped[0][0].hparams.loops
        plot(curves, list(range(1, top + 1)), "loops", title, out / "loops.png", mark=b)
        results["loops"] = curves
        results["loops_b"] = {label: module.hparams.loops for module, label in looped}
    return results


def summary_figure(dirs: list[str | Path], path: str | Path, titles: list[str] | None = None):
    """The tasks side by side: each folder's ``errors_standard.csv`` (written by
    ``evaluate``; or a CSV of that format given directly, e.g. ``docs/icl_cpu_errors.csv``)
    as one panel of error against in-context examples, bands included."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    check(len(dirs) >= 1, "dirs", dirs, "give at least one evaluation folder")
    floor = 1e-5
    fig, axes = plt.subplots(1, len(dirs), figsize=(4.6 * len(dirs), 4.0), squeeze=False)
    for i, (folder, ax) in enumerate(zip(dirs, axes[0], strict=True)):
        csv_path = Path(folder)
        if csv_path.is_dir():
            csv_path = csv_path / "errors_standard.csv"
        check(csv_path.is_file(), "dirs", str(folder), "must be or hold an errors_standard.csv")
        curves: dict[str, list[tuple[int, float, float, float]]] = {}
        with csv_path.open() as f:
            for row in csv.DictReader(f):
                curves.setdefault(row["predictor"], []).append(
                    (int(row["examples"]), float(row["mean"]), float(row["lo"]), float(row["hi"]))
                )
        ax.set_prop_cycle(color=distinct_colors(len(curves)))
        for name, points in curves.items():
            n, mean, lo, hi = (
                torch.tensor(c).clamp(min=floor).numpy() for c in zip(*points, strict=True)
            )
            style = "-o" if name.startswith(("standard", "looped")) else "-"
            (line,) = ax.plot(n, mean, style, label=name, markersize=2.5, linewidth=1.2)
            ax.fill_between(n, lo, hi, color=line.get_color(), alpha=0.15)
        ax.set_yscale("log")
        ax.set_ylim(top=min(ax.get_ylim()[1], 10.0))  # as plot(): least squares' spike at d
        ax.set_xlabel("in-context examples")
        ax.set_title(titles[i] if titles else csv_path.parent.name, fontsize=10)
        ax.legend(fontsize=6)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("squared error / normaliser")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130)
    plt.close(fig)
    return out


def table(results: dict[str, dict[str, tuple]], positions: list[int]) -> str:
    """A markdown table of the mean errors at ``positions`` (numbers of examples)."""
    lines = []
    for dist, curves in results.items():
        if dist in ("loops", "loops_b"):
            continue
        lines.append(f"\n{dist}:\n")
        lines.append("| predictor | " + " | ".join(f"n = {p}" for p in positions) + " |")
        lines.append("| --- |" + " --- |" * len(positions))
        for name, (mean, _, _) in curves.items():
            cells = " | ".join(f"{mean[p]:.3g}" for p in positions if p < len(mean))
            lines.append(f"| {name} | {cells} |")
    return "\n".join(lines)
