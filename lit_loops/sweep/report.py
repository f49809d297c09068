"""What a sweep shows at its end: the table printed, ``table.csv``, ``<metric>.png``.

The table has a row per run (parameters, metric, steps, wall time, state); the printed one
keeps only the parameters the runs differ in, the CSV keeps them all. The plot is a heatmap
for two swept parameters with few values, else the metric against each swept parameter.
Parameters read by their last dotted part (``lr`` for ``model.init_args.lr``) and a swept
config file by its stem (``k110`` for ``configs/oocl/k110.yaml``), as in the runner's log
lines. Everything here reads the runs and changes nothing.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lit_loops.sweep.state import RunRecord

if TYPE_CHECKING:
    from lit_loops.sweep.runner import LocalSweep


def format_params(params: dict[str, Any]) -> str:
    return " ".join(f"{short_name(k)}={display_value(v)}" for k, v in params.items())


def format_metric(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def short_name(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def display_value(value: Any) -> str:
    # a swept config file (`--config=configs/oocl/k110.yaml`) reads as its stem: k110
    if isinstance(value, str) and value.endswith((".yaml", ".yml")):
        return Path(value).stem
    return str(value)


def param_keys(runs: list[RunRecord], order: list[str] | None = None) -> list[str]:
    """Every parameter of the runs: those in ``order`` (the file's) first, then as they come."""
    return list(dict.fromkeys([*(order or []), *(k for r in runs for k in r.params)]))


def value_count(runs: list[RunRecord], key: str) -> int:
    """How many different values ``key`` takes among the runs (missing counts as one)."""
    return len({json.dumps(r.params.get(key)) for r in runs})


def swept_keys(runs: list[RunRecord], order: list[str] | None = None) -> list[str]:
    """Parameters that take more than one value among the runs, in the file's order."""
    return [k for k in param_keys(runs, order) if value_count(runs, k) > 1]


def table_rows(
    runs: list[RunRecord], metric_name: str, order: list[str] | None = None
) -> list[dict[str, Any]]:
    keys = param_keys(runs, order)
    return [
        {
            "id": r.id,
            **{k: r.params.get(k) for k in keys},
            metric_name: r.metric,
            "steps": r.steps,
            "wall_s": r.wall_s,
            "state": r.state,
            "run_dir": r.run_dir,
        }
        for r in runs
    ]


def write_table(
    runs: list[RunRecord], metric_name: str, path: Path, order: list[str] | None = None
) -> None:
    rows = table_rows(runs, metric_name, order)
    if not rows:
        return
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def format_table(runs: list[RunRecord], metric_name: str, order: list[str] | None = None) -> str:
    keys = swept_keys(runs, order) or param_keys(runs)
    header = ["run", *map(short_name, keys), metric_name, "steps", "wall", "state"]
    body = [
        [
            r.id,
            *(display_value(r.params.get(k)) for k in keys),
            format_metric(r.metric),
            "-" if r.steps is None else str(r.steps),
            "-" if r.wall_s is None else f"{r.wall_s / 60:.1f} min",
            r.state,
        ]
        for r in runs
    ]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *body, strict=True)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in [header, *body]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _sort_key(value: Any) -> tuple:
    return (0, value, "") if _is_number(value) else (1, 0, display_value(value))


def plot_sweep(
    runs: list[RunRecord],
    metric_name: str,
    title: str,
    path: Path,
    order: list[str] | None = None,
) -> Path | None:
    """Two swept parameters with few values: a heatmap; otherwise the metric against each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in runs if r.metric is not None]
    keys = swept_keys(runs, order)
    if not runs or not keys:
        return None
    if len(keys) == 2 and all(value_count(runs, k) <= 12 for k in keys):
        x_key, y_key = keys
        xs = sorted({r.params[x_key] for r in runs}, key=_sort_key)
        ys = sorted({r.params[y_key] for r in runs}, key=_sort_key)
        grid = [[math.nan] * len(xs) for _ in ys]
        for r in runs:  # the mean where a point ran more than once
            cell = [q.metric for q in runs if q.params == r.params]
            grid[ys.index(r.params[y_key])][xs.index(r.params[x_key])] = sum(cell) / len(cell)
        fig, ax = plt.subplots(figsize=(1.3 * len(xs) + 2.5, 0.8 * len(ys) + 1.8))
        image = ax.imshow(grid, cmap="viridis", aspect="auto", origin="lower")
        for i, row in enumerate(grid):
            for j, value in enumerate(row):
                if not math.isnan(value):  # dark text on the bright end of viridis
                    bright = image.norm(value) > 0.6
                    ax.text(
                        j,
                        i,
                        f"{value:.3f}",
                        ha="center",
                        va="center",
                        fontsize=9,
                        color="black" if bright else "white",
                    )
        ax.set_xticks(range(len(xs)), [display_value(x) for x in xs])
        ax.set_yticks(range(len(ys)), [display_value(y) for y in ys])
        ax.set_xlabel(short_name(x_key))
        ax.set_ylabel(short_name(y_key))
        fig.colorbar(image, ax=ax, label=metric_name)
    else:
        fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.4), squeeze=False)
        for ax, key in zip(axes[0], keys, strict=True):
            values = [r.params[key] for r in runs]
            if all(_is_number(v) for v in values):
                ax.scatter(values, [r.metric for r in runs])
                positive = [v for v in values if v > 0]
                if len(positive) == len(values) and max(values) >= 10 * min(values):
                    ax.set_xscale("log")
            else:
                labels = sorted({display_value(v) for v in values})
                ax.scatter(
                    [labels.index(display_value(v)) for v in values], [r.metric for r in runs]
                )
                ax.set_xticks(range(len(labels)), labels)
            ax.set_xlabel(short_name(key))
            ax.set_ylabel(metric_name)
            ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def finish(sweep: LocalSweep, runs: list[RunRecord]) -> None:
    """Writes table.csv and the plot into the sweep's folder and prints the table."""
    order = list(sweep.config["parameters"])  # the file's order (the engine sorts by name)
    table = sweep.folder / "table.csv"
    write_table(runs, sweep.metric_name, table, order)
    plot = plot_sweep(
        runs,
        sweep.metric_name,
        f"{sweep.name}: {sweep.metric_name} ({sweep.goal})",
        sweep.folder / (sweep.metric_name.replace("/", "_") + ".png"),
        order,
    )
    print()
    print(format_table(runs, sweep.metric_name, order))
    print(f"\nTable: {table}" + (f"\nPlot:  {plot}" if plot else ""))
