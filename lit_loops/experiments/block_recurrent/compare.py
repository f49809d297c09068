"""The four-variant comparison (issue 21, the paper's Table 1 at CPU scale), read from a
sweep folder of ``configs/sweeps/block_recurrent_compare.yaml``.

A variant is named by the override its run stacked on ``compare.yaml`` (its ``config``
parameter): ``slide``, ``xl``, ``br_fixed`` (``compare.yaml`` itself), ``br_lstm``. Each
variant is summarised over its seeds from the last validation of every run: bits per byte
overall and per segment position (segment 1 starts cold: no memory, no state), the
training wall time and tokens/s (``Throughput``), and bits per byte at equal wall time (the
validation curve interpolated at the training time of the fastest variant's last
validation: the state costs compute, and the paper's claim is at equal compute).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

VARIANTS = {  # override file stem -> (variant, label): the order of the table
    "compare_slide": ("slide", "sliding window (no memory across segments, no state)"),
    "compare_xl": ("xl", "Transformer-XL (memory, no state)"),
    "compare": ("br_fixed", "block-recurrent, fixed gate"),
    "compare_lstm": ("br_lstm", "block-recurrent, LSTM gate"),
}


def variant_of(params: dict[str, Any]) -> str:
    stem = Path(str(params.get("config", "compare.yaml"))).stem
    if stem not in VARIANTS:
        raise ValueError(f"config={params.get('config')!r} is not one of the compare overrides")
    return VARIANTS[stem][0]


def segment_keys(metrics: dict[str, Any]) -> list[str]:
    keys = [k for k in metrics if k.startswith("val/bpc_segment")]
    return sorted(keys, key=lambda k: int(k.removeprefix("val/bpc_segment")))


def interpolate(history: list[dict[str, Any]], x_key: str, y_key: str, x: float) -> float:
    """``y`` at ``x`` on the piecewise-linear curve of the validations that have both
    (nan beyond the last one; the first one's value before it)."""
    points = sorted((h[x_key], h[y_key]) for h in history if x_key in h and y_key in h)
    if not points or x > points[-1][0] + 1e-9:
        return math.nan
    if x <= points[0][0]:
        return points[0][1]
    for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
        if x0 <= x <= x1:
            return y0 + (y1 - y0) * (x - x0) / max(x1 - x0, 1e-12)
    return points[-1][1]


def mean_tokens_per_s(run: dict[str, Any]) -> float:
    """Training tokens/s over the whole run: tokens per step (the last window's tokens/s
    over its steps/s) x steps / training seconds at the last validation."""
    summary, last = run["summary"], run["last"]
    if not summary.get("perf/steps_per_s") or "perf/tokens_per_s" not in summary:
        return math.nan
    per_step = summary["perf/tokens_per_s"] / summary["perf/steps_per_s"]
    return per_step * last.get("step", 0) / max(last.get("perf/elapsed_s", math.nan), 1e-9)


def load_runs(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """Every finished run of the sweep: variant, seed, its validations and last values."""
    folder = Path(sweep_dir)
    state = json.loads((folder / "state.json").read_text())
    runs = []
    for r in state["runs"]:
        history = [h for h in r.get("history") or [] if "val/bpc" in h]
        if not history:
            continue
        report = folder / "reports" / f"{r['id']}.json"  # the run's last logged values
        summary = json.loads(report.read_text()).get("summary") if report.is_file() else None
        runs.append(
            {
                "variant": variant_of(r["params"]),
                "seed": r["params"].get("seed_everything", 0),
                "history": history,
                "last": history[-1],
                "summary": summary or r.get("summary") or {},
            }
        )
    return runs


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per variant (in ``VARIANTS`` order): mean and spread (max - min) over seeds."""
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by_variant.setdefault(run["variant"], []).append(run)
    # equal wall time: the fastest variant's training time at its last validation
    t_equal = min(
        min(r["last"].get("perf/elapsed_s", math.inf) for r in rs) for rs in by_variant.values()
    )
    rows = []
    for variant, label in VARIANTS.values():
        rs = by_variant.get(variant)
        if not rs:
            continue
        row: dict[str, Any] = {"variant": variant, "label": label, "seeds": len(rs)}

        def stat(values: list[float]) -> tuple[float, float]:
            return sum(values) / len(values), max(values) - min(values)

        row["bpc"], row["bpc_spread"] = stat([r["last"]["val/bpc"] for r in rs])
        for i, key in enumerate(segment_keys(rs[0]["last"])):
            row[f"bpc_segment{i + 1}"], row[f"bpc_segment{i + 1}_spread"] = stat(
                [r["last"][key] for r in rs]
            )
        row["step"] = max(r["last"].get("step", 0) for r in rs)
        row["wall_s"] = stat([r["last"].get("perf/elapsed_s", math.nan) for r in rs])[0]
        row["tokens_per_s"] = stat([mean_tokens_per_s(r) for r in rs])[0]
        row["equal_wall_s"] = t_equal
        row["bpc_at_equal_wall"] = stat(
            [interpolate(r["history"], "perf/elapsed_s", "val/bpc", t_equal) for r in rs]
        )[0]
        # paired with Transformer-XL at the same seed (same data stream): the later
        # segments' bpc (2 .. k, which start with carried memories and states) minus XL's
        later = segment_keys(rs[0]["last"])[1:]
        xl = {r["seed"]: r for r in by_variant.get("xl", [])}
        diffs = [
            sum(r["last"][k] - xl[r["seed"]]["last"][k] for k in later) / len(later)
            for r in rs
            if r["seed"] in xl and later
        ]
        row["later_vs_xl"] = sorted(diffs)
        rows.append(row)
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    segments = sorted(
        int(k.removeprefix("bpc_segment"))
        for k in rows[0]
        if k.startswith("bpc_segment") and not k.endswith("_spread")
    )
    head = (
        ["variant", "seeds", "bpc (spread)"]
        + [f"segment {s}" for s in segments]
        + ["steps", "train wall s", "tokens/s", f"bpc at {rows[0]['equal_wall_s']:.0f} s"]
        + ["later segments - XL, per seed"]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        cells = [r["label"], str(r["seeds"]), f"{r['bpc']:.3f} ({r['bpc_spread']:.3f})"]
        cells += [
            f"{r[f'bpc_segment{s}']:.3f} ({r[f'bpc_segment{s}_spread']:.3f})" for s in segments
        ]
        cells += [
            str(r["step"]),
            f"{r['wall_s']:.0f}",
            f"{r['tokens_per_s']:.0f}",
            f"{r['bpc_at_equal_wall']:.3f}",
            " / ".join(f"{d:+.3f}" for d in r["later_vs_xl"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(runs: list[dict[str, Any]], rows: list[dict[str, Any]], path: str | Path) -> None:
    """Left: bits per byte against the segment position (mean over seeds, bars = the
    seeds' range). Right: validation bpc against training wall time, every run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lit_loops.plots import finish_plot

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    labels = dict(VARIANTS.values())  # variant -> label
    colours = dict(zip(labels, plt.cm.tab10.colors, strict=False))
    for r in rows:
        segments = sorted(
            int(k.removeprefix("bpc_segment"))
            for k in r
            if k.startswith("bpc_segment") and not k.endswith("_spread")
        )
        ys = [r[f"bpc_segment{s}"] for s in segments]
        err = [r[f"bpc_segment{s}_spread"] / 2 for s in segments]
        left.errorbar(
            segments,
            ys,
            yerr=err,
            marker="o",
            capsize=3,
            label=r["label"],
            color=colours[r["variant"]],
        )
    left.set_xlabel("segment position in the sample (1 starts cold)")
    left.set_ylabel("validation bits per byte")
    left.set_xticks(segments)
    left.set_title("per segment, last validation")
    left.grid(alpha=0.3)
    left.legend(fontsize=7)
    seen = set()
    for run in runs:
        pts = [(h["perf/elapsed_s"], h["val/bpc"]) for h in run["history"] if "perf/elapsed_s" in h]
        if not pts:
            continue
        xs, ys = zip(*pts, strict=True)
        label = None if run["variant"] in seen else labels[run["variant"]]
        seen.add(run["variant"])
        right.plot(xs, ys, color=colours[run["variant"]], alpha=0.8, label=label)
    right.set_xlabel("training wall time (s)")
    right.set_ylabel("validation bits per byte")
    right.set_ylim(top=min(4.0, right.get_ylim()[1]))
    finish_plot(fig, right, path, "against training time (every seed)")
