"""scripts/plot_curves.py: a run's validation curves from its CSV log."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_plot_curves_reads_the_logged_rows_and_draws_them(tmp_path):
    log = tmp_path / "metrics.csv"
    log.write_text(
        "epoch,step,train/loss,val/exact_match\n0,49,0.5,\n0,99,,0.25\n0,149,0.3,\n0,199,,0.75\n"
    )
    out = tmp_path / "curves.png"
    cmd = [sys.executable, ROOT / "scripts" / "plot_curves.py", log, "val/exact_match"]
    done = subprocess.run([*cmd, "--out", out], capture_output=True, text=True, check=True)
    assert "| 99 | 0.2500 |" in done.stdout and "| 199 | 0.7500 |" in done.stdout
    assert "| 49 |" not in done.stdout  # rows where the metric was not logged
    assert out.stat().st_size > 10_000
    missing = subprocess.run([*cmd, "val/nope", "--out", out], capture_output=True, text=True)
    assert missing.returncode != 0 and "val/nope" in missing.stderr
