"""The paper configs on a GPU, when the machine has one: training steps/s (median over the
steps after a warmup) and peak GPU memory (``torch.cuda.max_memory_allocated``), each
config at its own batch and precision, in its own process. On a machine without a GPU
the section says so and measures nothing.
"""

from __future__ import annotations

import statistics

import torch

from benchmarks.common import measure
from benchmarks.data_generation import (
    base_configs,
    build,
    fit,
    is_paper,
    scratch,
    stack_files,
    step_timer,
)


def paper_step(config: str, device: str = "cuda", steps: int = 10, warmup: int = 3) -> dict:
    """Steps/s and peak memory of ``config`` trained for ``warmup + steps`` batches."""
    with scratch():
        cli = build(stack_files(config))
        timer = step_timer(warmup=warmup, steps=steps)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        fit(cli, warmup + steps, [timer], accelerator=device)
    step = statistics.median(timer.times[warmup:])
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    return {"steps_per_s": 1 / step, "peak_mb": peak, "steps": len(timer.times) - warmup}


def run(repeats: int = 1, quick: bool = False) -> dict:
    if not torch.cuda.is_available():
        return {"available": False}
    out = {"available": True, "device": torch.cuda.get_device_name(0), "configs": {}}
    for config in (c for c in base_configs() if is_paper(c)):
        out["configs"][config] = measure("benchmarks.gpu", "paper_step", 1, config=config)[0]
    return out


def markdown(out: dict) -> str:
    if not out.get("available"):
        return "No GPU on this machine: nothing measured (run `make bench` on one to fill this in)."
    lines = [
        f"Device: {out['device']}.",
        "",
        "| paper config | steps/s | peak GPU memory (MB) |",
        "| --- | --- | --- |",
    ]
    for config, r in out["configs"].items():
        lines.append(f"| {config} | {r['steps_per_s']:.2f} | {r['peak_mb']:.0f} |")
    return "\n".join(lines)
