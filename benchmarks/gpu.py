"""The paper configs on a GPU (``make bench-gpu``: this section alone, at most 10 minutes;
``make bench`` runs it too): training steps/s and peak GPU memory of every paper config
(``config_stacks`` ids of ``paper*.yaml`` and ``enwik8.yaml``), at its own batch, under
``bf16-mixed`` precision, eager and compiled (``--model.init_args.compile=true``,
``lit_loops.compile``).

* one process per config (the configs one after the other): eager first, then the same
  config compiled (a fresh module and Trainer; the GPU's memory emptied and its peak reset
  in between);
* steps/s: 1 / the median of ``STEPS`` training batches after ``WARMUP`` (each timed from
  ``on_train_batch_start`` to ``on_train_batch_end`` after a ``torch.cuda.synchronize``);
  compiled, the warm-up steps trace and compile, and their extra time beyond as many
  steady steps is reported as the compile time (with inductor's on-disk cache as the
  machine has it: the ICL paper configs share one model shape, so the later ones reuse
  the first one's kernels);
* peak memory: ``torch.cuda.max_memory_allocated`` over the run's steps;
* ICL at the end of its curricula (full dimension and prompt length), enwik8 on a small
  stand-in file (as in the data-generation section); no validation, logger or callbacks.

The whole section keeps to ``BUDGET_S``: a config whose process would start past it, or
runs past its share, is reported as skipped or timed out rather than stretching the run.
On a machine without a GPU the section says so, measures nothing and succeeds (and
``benchmarks.run`` keeps the GPU figures measured before, if any).
"""

from __future__ import annotations

import gc
import subprocess
import time

import torch

from benchmarks.common import config_stacks, measure, steady_and_warmup
from benchmarks.data_generation import build, fit, is_paper, scratch, stack_files, step_timer

PRECISION = "bf16-mixed"
STEPS, WARMUP = 10, 3
BUDGET_S = 540.0  # of the 10 minutes: the rest is start-up and writing the results
PROCESS_TIMEOUT_S = 240.0  # one config, eager and compiled


def paper_configs() -> list[str]:
    return [name for name in config_stacks() if is_paper(name.split("+")[-1])]


def step_rate(
    config: str,
    compile: bool = False,
    precision: str = PRECISION,
    device: str = "cuda",
    steps: int = STEPS,
    warmup: int = WARMUP,
) -> dict:
    """Steps/s, compile seconds and peak GPU memory of ``config`` trained for
    ``warmup + steps`` batches (see the module docs)."""
    overrides = [f"--trainer.precision={precision}"]
    if compile:
        overrides.append("--model.init_args.compile=true")
    cuda = device == "cuda"
    gc.collect()  # what an earlier measurement in this process left
    with scratch():
        cli = build(stack_files(config), overrides)
        timer = step_timer(warmup=warmup, steps=steps, sync=cuda)
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        fit(cli, warmup + steps, [timer], accelerator=device)
    step, compile_s = steady_and_warmup(timer.times, warmup)
    return {
        "steps_per_s": 1 / step,
        "compile_s": compile_s,
        "peak_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "steps": len(timer.times) - warmup,
        "graphs_in_timed_steps": timer.graphs[-1] - timer.graphs[warmup - 1],
        "batch_size": cli.datamodule.hparams.batch_size,
    }


def config_rates(config: str, **kwargs) -> dict:
    """Eager, then compiled, in this process: ``{"eager": ..., "compiled": ...}``."""
    out = {}
    for mode in ("eager", "compiled"):
        try:
            out[mode] = step_rate(config, compile=mode == "compiled", **kwargs)
        except Exception as e:  # out of memory, a failed compile: reported, not fatal
            out[mode] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
    return out


def run(repeats: int = 1, quick: bool = False) -> dict:
    if not torch.cuda.is_available():
        return {"available": False}
    out = {
        "available": True,
        "device": torch.cuda.get_device_name(0),
        "precision": PRECISION,
        "budget_s": BUDGET_S,
        "configs": {},
    }
    start = time.perf_counter()
    for config in paper_configs():
        left = BUDGET_S - (time.perf_counter() - start)
        if left < 30:
            out["configs"][config] = {"skipped": f"the {BUDGET_S:.0f} s budget was spent"}
            continue
        timeout = min(PROCESS_TIMEOUT_S, left)
        try:
            out["configs"][config] = measure(
                "benchmarks.gpu", "config_rates", 1, timeout=timeout, config=config
            )[0]
        except subprocess.TimeoutExpired:
            out["configs"][config] = {"skipped": f"timed out after {timeout:.0f} s"}
        except RuntimeError as e:  # the process failed: its last words
            out["configs"][config] = {"skipped": str(e)[-300:]}
    out["wall_s"] = time.perf_counter() - start
    return out


def cells(r: dict | None) -> list[str]:
    """steps/s, peak MB, compile s of one mode (or why not)."""
    if r is None:
        return ["", "", ""]
    if "error" in r:
        return [f"failed: {r['error'][:80]}", "", ""]
    recompiled = " (recompiled while timed)" if r.get("graphs_in_timed_steps") else ""
    peak = "" if r["peak_mb"] is None else f"{r['peak_mb']:.0f}"
    return [f"{r['steps_per_s']:.2f}{recompiled}", peak, f"{r['compile_s']:.1f}"]


def markdown(out: dict) -> str:
    if not out.get("available"):
        return (
            "No GPU on this machine: nothing measured (run `make bench-gpu` on one to fill "
            "this in; install a CUDA build of torch first, see the Makefile's `TORCH`)."
        )
    lines = [
        f"Device: {out['device']}; precision {out['precision']}; "
        f"{out.get('wall_s', 0):.0f} s of a {out['budget_s']:.0f} s budget.",
        "",
        "| paper config | batch | eager steps/s | eager peak MB | compiled steps/s | "
        "compiled peak MB | compile s | compiled / eager |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for config, r in out["configs"].items():
        if "skipped" in r:
            lines.append(f"| {config} | skipped: {r['skipped']} | | | | | | |")
            continue
        e, c = r.get("eager"), r.get("compiled")
        speedup = ""
        if e and c and "error" not in e and "error" not in c:
            speedup = f"{c['steps_per_s'] / e['steps_per_s']:.2f}"
        batch = next((m["batch_size"] for m in (e, c) if m and "batch_size" in m), "")
        e_rate, e_peak, _ = cells(e)
        c_rate, c_peak, c_compile = cells(c)
        lines.append(
            f"| {config} | {batch} | {e_rate} | {e_peak} | {c_rate} | {c_peak} | {c_compile} | "
            f"{speedup} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    import json

    result = run()
    print(json.dumps(result, indent=1))
    print(markdown(result))
