"""Measure the OOCL table of RESULTS.md: (k1,k2,k3) in (1,0,0), (1,1,0), (1,1,1).

    python scripts/oocl_results.py [--config configs/oocl/cpu.yaml] [extra CLI args ...]

Runs each setting through the real CLI (CSV logger), one after the other, and prints a
markdown table: final and best val/acc_table1 and val/acc_table2, the first validation
step at which val/acc_table1 reached 99 % (or "never"), steps and wall time.
"""

from __future__ import annotations

import argparse
import csv
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = {
    "(1,0,0)": "configs/oocl/k100.yaml",
    "(1,1,0)": "configs/oocl/k110.yaml",
    "(1,1,1)": None,
}


def run(config: str, override: str | None, extra: list[str]) -> dict:
    cmd = [str(Path(sys.executable).parent / "lit-loops"), "fit", "--config", config]
    if override:
        cmd += ["--config", override]
    cmd += [
        "--config",
        "configs/presets/csv_logger.yaml",
        "--trainer.enable_progress_bar=false",
        *extra,
    ]
    start = time.time()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.time() - start
    if out.returncode:
        sys.exit(out.stdout[-3000:] + out.stderr[-3000:])
    folder = re.search(r"^Folder:\s+(\S+)", out.stdout, re.M).group(1)
    rows = [
        r for r in csv.DictReader(open(ROOT / folder / "metrics.csv")) if r.get("val/acc_table1")
    ]
    acc1 = [(int(r["step"]) + 1, float(r["val/acc_table1"])) for r in rows]
    acc2 = [float(r["val/acc_table2"]) for r in rows if r.get("val/acc_table2")]
    first99 = next((step for step, acc in acc1 if acc >= 0.99), None)
    return {
        "command": " ".join(["lit-loops"] + cmd[1:]),
        "final1": acc1[-1][1],
        "best1": max(a for _, a in acc1),
        "final2": acc2[-1] if acc2 else float("nan"),
        "best2": max(acc2) if acc2 else float("nan"),
        "first99": first99,
        "steps": acc1[-1][0],
        "wall": wall,
        "folder": folder,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="configs/oocl/cpu.yaml")
    parser.add_argument(
        "--only", nargs="*", default=list(SETTINGS), help="settings to run, e.g. '(1,1,1)'"
    )
    args, extra = parser.parse_known_args()
    print(
        "| (k1,k2,k3) | val/acc_table1 final (best) | val/acc_table2 final (best) | steps to 99 % table 1 | steps | wall time | command |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in args.only:
        r = run(args.config, SETTINGS[name], extra)
        print(
            f"| {name} | {r['final1']:.3f} ({r['best1']:.3f}) | {r['final2']:.3f} ({r['best2']:.3f}) | "
            f"{r['first99'] or 'never'} | {r['steps']} | {r['wall'] / 60:.1f} min | `{r['command']}` |",
            flush=True,
        )


if __name__ == "__main__":
    main()
