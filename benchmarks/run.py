"""``make bench``: every benchmark side by side in one run; writes BENCHMARKS.md and the raw
figures as JSON (benchmarks/results.json).

    python -m benchmarks.run                 # everything
    python -m benchmarks.run --only block_recurrent --quick   # one section, one repeat
    python -m benchmarks.run --only gpu      # make bench-gpu: the paper configs on a GPU
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import platform
import time

import torch

from benchmarks.common import ROOT, fresh_compile_cache

# section name -> module with run(repeats, quick) -> dict and markdown(dict) -> str
SECTIONS = {
    "data_generation": "benchmarks.data_generation",
    "efficiency": "benchmarks.efficiency",
    "block_recurrent": "benchmarks.block_recurrent",
    "icl": "benchmarks.icl",
    "oocl": "benchmarks.oocl",
    "generation": "benchmarks.generation",
    "lightning_overhead": "benchmarks.lightning_overhead",
    "gpu": "benchmarks.gpu",
}
INTRO = """# Benchmarks

Written by `make bench` (`python -m benchmarks.run`); the raw figures are in
`benchmarks/results.json`. Every figure is a ratio of two measurements taken side by side
in the same run on the same machine, each in a fresh process with one torch thread,
given as median (min-max) over the repeats; absolute numbers on a shared machine are
noise, ratios much less so. Compiled contenders (``compile: true``, ``lit_loops.compile``)
are timed after their warm-up steps; their compile time is those steps' extra seconds,
given for the first repeat (from the run's own empty cache, as a first run anywhere) and
the later ones (from inductor's on-disk cache that the first left).
"""


def machine() -> str:
    return (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads "
        f"available, torch {torch.__version__}, Python {platform.python_version()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", choices=list(SECTIONS), help="sections to run")
    parser.add_argument("--quick", action="store_true", help="one repeat each")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--render", action="store_true", help="rewrite BENCHMARKS.md only")
    args = parser.parse_args()
    json_path = ROOT / "benchmarks" / "results.json"
    results = json.loads(json_path.read_text()) if json_path.exists() else {}
    if args.render:
        write_markdown(results)
        return
    fresh_compile_cache()  # every compiled model's first measurement compiles from scratch
    for name in args.only or list(SECTIONS):
        start = time.perf_counter()
        print(f"== {name}", flush=True)
        module = importlib.import_module(SECTIONS[name])
        result = module.run(repeats=args.repeats, quick=args.quick)
        if keeps_previous(results.get(name), result):
            print(module.markdown(result))
            print(f"keeping the {name} figures measured {results[name]['_when']}", flush=True)
            continue
        results[name] = result
        results[name]["_wall_s"] = time.perf_counter() - start
        results[name]["_when"] = datetime.datetime.now().isoformat(timespec="seconds")
        results[name]["_machine"] = machine()
        print(module.markdown(results[name]), flush=True)
    json_path.write_text(json.dumps(results, indent=1))
    write_markdown(results)
    print(f"wrote {ROOT / 'BENCHMARKS.md'} and {json_path}")


def keeps_previous(previous: dict | None, new: dict) -> bool:
    """A section that needs hardware this machine lacks (the GPU one: ``available`` False)
    leaves the figures measured before on a machine that has it."""
    return new.get("available") is False and bool((previous or {}).get("available"))


def write_markdown(results: dict) -> None:
    """BENCHMARKS.md from the figures (``python -m benchmarks.run --render`` redoes it
    from results.json without measuring)."""
    parts = [INTRO]
    for name, module_name in SECTIONS.items():
        if name in results:
            module = importlib.import_module(module_name)
            r = results[name]
            parts.append(
                f"## {name}\n\n{(module.__doc__ or '').strip()}\n\n"
                f"Measured {r['_when']} on {r['_machine']}; {r['_wall_s']:.0f} s.\n\n"
                f"{module.markdown(r)}\n\n{getattr(module, 'NOTES', '').strip()}\n"
            )
    (ROOT / "BENCHMARKS.md").write_text("\n".join(parts))


if __name__ == "__main__":
    main()
