"""What every benchmark shares: a fresh process per measurement (so peak memory is the
measured thing's own and no warm cache leaks between contenders), repeats summarised as
median and min-max, and ratios of medians taken in the same run.

A measurement is a function ``fn(**kwargs) -> dict`` in some benchmark module; ``measure``
runs it ``repeats`` times, each in a new ``python -c`` process pinned to ``threads``
torch threads, and collects the dicts.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
NOT_EXPERIMENTS = {"presets", "sweeps"}  # folders of configs/ that hold no experiment


def is_base_config(path: Path) -> bool:
    import yaml

    config = yaml.safe_load(path.read_text()) or {}
    return "class_path" in (config.get("model") or {})


def config_stacks() -> dict[str, list[Path]]:
    """Every runnable config stack, by id: a config with a ``model:`` class_path is a base
    (``icl/cpu.yaml``); any other file of an experiment's folder is an override, stacked on
    that folder's ``paper.yaml`` when its name starts with ``paper_``, else on its
    ``cpu.yaml`` (``icl/paper+paper_looped.yaml``)."""
    stacks = {}
    for path in sorted(CONFIGS.glob("*/*.yaml")):
        folder = path.parent
        if folder.name in NOT_EXPERIMENTS:
            continue
        if is_base_config(path):
            stacks[f"{folder.name}/{path.name}"] = [path]
        else:
            base = folder / ("paper.yaml" if path.name.startswith("paper_") else "cpu.yaml")
            stacks[f"{folder.name}/{base.stem}+{path.name}"] = [base, path]
    return stacks


def measure(
    module: str,
    fn: str,
    repeats: int = 3,
    threads: int = 1,
    timeout: float | None = None,
    **kwargs,
) -> list[dict]:
    """``repeats`` results of ``module.fn(**kwargs)``, each from a fresh process (killed
    after ``timeout`` seconds: ``subprocess.TimeoutExpired``)."""
    code = (
        "import json, sys, torch;"
        f"torch.set_num_threads({threads});"
        f"from {module} import {fn};"
        f"print('RESULT' + json.dumps({fn}(**json.loads(sys.argv[1]))))"
    )
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    results = []
    for _ in range(repeats):
        proc = subprocess.run(
            [sys.executable, "-c", code, json.dumps(kwargs)],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=timeout,
        )
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"{module}.{fn}({kwargs}) failed:\n{proc.stderr[-3000:]}")
        results.append(json.loads(lines[-1][len("RESULT") :]))
    return results


def interleaved(calls: dict[str, tuple[str, str, dict]], repeats: int, threads: int = 1):
    """``{name: [result per repeat]}`` for ``calls = {name: (module, fn, kwargs)}``, the
    contenders taking turns within each repeat, so that a machine slowing down or speeding
    up during the run touches them all alike."""
    results: dict[str, list[dict]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, (module, fn, kwargs) in calls.items():
            results[name] += measure(module, fn, 1, threads, **kwargs)
    return results


def fresh_compile_cache() -> str:
    """Points ``torch.compile``'s caches (inductor's kernels, FX graphs, AOTAutograd) of
    this process and the measurements it starts at a new empty folder, removed at exit:
    ``benchmarks.run`` calls it once, so every model's first compiled measurement in a run
    compiles from scratch, whatever ran on the machine before, and its later repeats reuse
    what the first compiled (``compile_times``)."""
    import atexit
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="lit_loops_inductor_")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = folder
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def compile_times(results: list[dict], key: str = "compile_s") -> dict:
    """A compiled contender's compile seconds over its repeats: the first repeat's
    (``empty_cache``: from an empty cache, in a ``benchmarks.run`` run) and the later ones'
    (``cached``: inductor's on-disk cache from the first; None with one repeat)."""
    rest = [r[key] for r in results[1:]]
    return {"empty_cache": results[0][key], "cached": spread(rest) if rest else None}


def fmt_compile(times: dict | None) -> str:
    """``31.2 s (cached: 2.6)`` from ``compile_times``."""
    if not times:
        return ""
    if "empty_cache" not in times:  # figures from before (a spread)
        return f"{times['median']:.1f} s"
    cached = times.get("cached")
    return f"{times['empty_cache']:.1f} s" + (
        f" (cached: {cached['median']:.1f})" if cached else ""
    )


def steady_and_warmup(times: list[float], warmup: int) -> tuple[float, float]:
    """(the median step after ``warmup`` steps, the seconds the warm-up steps took beyond
    that many steady ones): with ``compile`` on, the second is the compile time (the
    first steps trace and compile; the timed ones never include it)."""
    step = statistics.median(times[warmup:])
    return step, max(0.0, sum(times[:warmup]) - warmup * step)


def spread(values: list[float]) -> dict:
    """median, min, max of a figure over repeats."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarise(results: list[dict], key: str) -> dict:
    return spread([r[key] for r in results])


def ratio(a: dict, b: dict) -> dict:
    """a / b: the ratio of medians, and the widest ratio the spreads allow."""
    return {
        "median": a["median"] / b["median"],
        "min": a["min"] / b["max"],
        "max": a["max"] / b["min"],
    }


def fmt(s: dict, digits: int = 2, unit: str = "") -> str:
    """``median (min-max)``."""
    f = f"{{:.{digits}f}}"
    return f"{f.format(s['median'])}{unit} ({f.format(s['min'])}-{f.format(s['max'])})"


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (Linux reports KB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
