"""The map of issue 17's levers: one row per run of the ``oocl_*`` sweeps, and their curves.

Each lever is a sweep folder (``runs/sweeps/oocl_<lever>/``, written by ``lit-loops
sweep configs/sweeps/oocl_<lever>.yaml``); each run is one setting as ``(1,0,0)``,
``(1,1,0)`` or ``(1,1,1)``. A row holds held-out table 1 at the end and at its best,
table 2, how well table 1's training cells are fitted (memorisation) and what the aliases
did at the end (``AliasAlignment``'s ``val/alias_*``). The plot has a row of panels per
lever: held-out table 1, then input and output translation precision@1, against steps.

    rows = lever_rows(["runs/sweeps/oocl_rank", ...]); print(markdown_table(rows))

``scripts/oocl_levers.py`` writes the table, a CSV and the plot.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from lit_loops.sweep.report import display_value, short_name

# what each row reports at the end: (column, logged key)
FINAL = (
    ("table1", "val/acc_table1"),
    ("table2", "val/acc_table2"),
    ("train_table1", "train/acc_table1"),
    ("in_p1", "val/alias_in_precision1"),
    ("out_p1", "val/alias_out_precision1"),
    ("in_procrustes", "val/alias_in_procrustes_precision1"),
    ("probe", "val/alias_probe_acc"),
    ("patch", "val/alias_patch_acc"),
)
CURVES = (
    ("val/acc_table1", "held-out table 1"),
    ("val/alias_in_precision1", "input precision@1"),
    ("val/alias_out_precision1", "output precision@1"),
)


def ks_of(params: dict[str, Any]) -> str:
    """``(1,1,1)`` from a swept ``config: configs/oocl/k111.yaml`` (the base: (1,1,1))."""
    stem = display_value(params.get("config", "k111.yaml"))
    return f"({stem[1]},{stem[2]},{stem[3]})" if len(stem) == 4 and stem[0] == "k" else stem


def setting_of(params: dict[str, Any]) -> str:
    """The swept values other than the k's and the run plumbing, ``name=value`` each."""
    skip = ("config", "trainer.enable_progress_bar", "trainer.max_steps")
    return " ".join(
        f"{short_name(k)}={display_value(v)}" for k, v in params.items() if k not in skip
    )


def lever_rows(folders: list[str | Path]) -> list[dict[str, Any]]:
    """A row per run that validated at least once, in each folder's run order."""
    rows = []
    for folder in map(Path, folders):
        state = json.loads((folder / "state.json").read_text())
        for run in state["runs"]:
            history = [h for h in run.get("history") or [] if "val/acc_table1" in h]
            if not history:
                continue
            last = history[-1]
            row = {
                "lever": folder.name.removeprefix("oocl_"),
                "setting": setting_of(run["params"]) or "-",
                "ks": ks_of(run["params"]),
                "state": run["state"],
                "steps": last["step"],
                "wall_s": run.get("wall_s"),
                "best_table1": max(h["val/acc_table1"] for h in history),
                "history": history,
            }
            for column, key in FINAL:
                row[column] = last.get(key)
            rows.append(row)
    return rows


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The map as a Markdown table: one line per run."""
    head = (
        "| lever | setting | (k1,k2,k3) | steps | held-out table 1 final (best) | table 2 "
        "| train table 1 | precision@1 in / out | Procrustes in | mixed-cell probe | patched "
        "| wall (s) |"
    )
    lines = [head, "|" + " --- |" * 12]
    for r in rows:
        lines.append(
            f"| {r['lever']} | {r['setting']} | {r['ks']} | {r['steps']} "
            f"| {_fmt(r['table1'])} ({_fmt(r['best_table1'])}) | {_fmt(r['table2'])} "
            f"| {_fmt(r['train_table1'])} | {_fmt(r['in_p1'])} / {_fmt(r['out_p1'])} "
            f"| {_fmt(r['in_procrustes'])} | {_fmt(r['probe'])} | {_fmt(r['patch'])} "
            f"| {'-' if r['wall_s'] is None else round(r['wall_s'])} |"
        )
    return "\n".join(lines)


def write_csv(rows: list[dict[str, Any]], path: str | Path) -> None:
    columns = ["lever", "setting", "ks", "state", "steps", "wall_s", "best_table1"]
    columns += [c for c, _ in FINAL]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


KS_COLOURS = {"(1,0,0)": "tab:gray", "(1,1,0)": "tab:blue", "(1,1,1)": "tab:red"}


def plot(rows: list[dict[str, Any]], path: str | Path, chance: float | None = None) -> None:
    """A row of panels per lever (see the module docs); colour = (k1,k2,k3), line style =
    the lever's setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levers = list(dict.fromkeys(r["lever"] for r in rows))
    fig, axes = plt.subplots(
        len(levers), len(CURVES), figsize=(4.2 * len(CURVES), 2.6 * len(levers)), squeeze=False
    )
    styles = ("-", "--", ":", "-.")
    for i, lever in enumerate(levers):
        mine = [r for r in rows if r["lever"] == lever]
        settings = list(dict.fromkeys(r["setting"] for r in mine))
        for j, (key, title) in enumerate(CURVES):
            ax = axes[i][j]
            for r in mine:
                points = [(h["step"], h[key]) for h in r["history"] if key in h]
                if not points:
                    continue
                ax.plot(
                    *zip(*points, strict=True),
                    color=KS_COLOURS.get(r["ks"], "black"),
                    linestyle=styles[settings.index(r["setting"]) % len(styles)],
                    label=f"{r['ks']} {r['setting']}" if r["setting"] != "-" else r["ks"],
                )
            if chance is not None:
                ax.axhline(chance, color="black", linewidth=0.6, alpha=0.5)
            ax.set_ylim(-0.02, 1.02)
            ax.set_title(f"{lever}: {title}", fontsize=9)
            ax.grid(alpha=0.3)
            if j == 0:
                ax.legend(fontsize=6)
            if i == len(levers) - 1:
                ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
