"""The process supervisor: a sweep's runs as child ``lit-loops fit`` processes.

:class:`LocalSweep` keeps up to ``--workers`` runs going at once. Each run's command line is
built by wandb's own agent code from the file's ``command`` (:func:`agent_command`), so a
run here is exactly the process ``wandb agent`` would start, with the environment that agent
gives it plus ``LIT_LOOPS_SWEEP_REPORT``, where its
:class:`~lit_loops.callbacks.sweep_report.SweepReport` writes the metrics back. Every poll
it reaps the runs that ended, reads the reports of the others, asks the engine which to stop
early (SIGTERM) and which to start next; on Ctrl-C it stops them all, to be rerun on a
restart. What it keeps on disk and what a restart means is state.py's; what it asks the
sweep engine is engine.py's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from lit_loops.callbacks.sweep_report import REPORT_ENV
from lit_loops.sweep.engine import next_params, runs_to_stop
from lit_loops.sweep.file import load_sweep
from lit_loops.sweep.report import format_metric, format_params
from lit_loops.sweep.state import (
    DONE_STATES,
    RERUN_STATES,
    RunRecord,
    SweepFolder,
    interrupted_checkpoint,
    to_rerun,
)

MAX_INITIAL_FAILURES = 5  # as wandb's agent: a sweep whose first runs all crash is broken


def agent_command(config: dict[str, Any], params: dict[str, Any]) -> list[str]:
    """The command line ``wandb agent`` starts for a run with these parameter values."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command, create_sweep_command_args

    command = create_sweep_command(list(config["command"]))
    macros = create_sweep_command_args({"args": {k: {"value": v} for k, v in params.items()}})
    # as wandb's agent fills them in (wandb_agent.Agent._command_run)
    macros["interpreter"] = [sys.executable]
    macros["program"] = [config.get("program", "")]
    macros["env"] = ["/usr/bin/env"]
    argv: list[str] = []
    for chunk in map(str, command):
        if chunk.startswith("${") and chunk.endswith("}"):
            argv += macros.get(chunk[2:-1]) or []
        else:
            argv.append(chunk)
    return argv


class LocalSweep:
    """One sweep folder: its runs, their processes, the engine's next proposals."""

    def __init__(
        self,
        path: str | os.PathLike,
        root: str | os.PathLike = "runs/sweeps",
        workers: int = 1,
        count: int | None = None,
        poll_s: float = 1.0,
        out=print,
    ) -> None:
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"--workers={workers!r} is invalid: must be an integer >= 1")
        if count is not None and (not isinstance(count, int) or count < 1):
            raise ValueError(f"--count={count!r} is invalid: must be an integer >= 1")
        self.config = load_sweep(path)
        self.name = str(self.config.get("name") or Path(path).stem)
        self.folder = Path(root) / self.name
        self.store = SweepFolder(self.folder, self.name, self.config)
        self.metric_name = self.config["metric"]["name"]
        self.goal = self.config["metric"].get("goal", "minimize")
        self.workers = workers
        self.count = count if count is not None else self.config.get("run_cap")
        if self.count is None and self.config["method"] != "grid":
            raise ValueError(
                f"a {self.config['method']} sweep never ends by itself: give --count N "
                "(or run_cap in the sweep file)"
            )
        self.poll_s = poll_s
        self.out = out
        self.runs: list[RunRecord] = []
        self.procs: dict[str, tuple[subprocess.Popen, float, Any]] = {}
        self.failures_this_session = 0
        self.successes_this_session = 0

    # --- persistent state (state.py) ---
    def open(self) -> None:
        self.runs = self.store.open()

    def save(self) -> None:
        self.store.save(self.runs)

    def by_id(self, run_id: str) -> RunRecord:
        return next(r for r in self.runs if r.id == run_id)

    # --- proposals ---
    def propose(self) -> RunRecord | None:
        """A run to start now: a crashed or interrupted one first, else the engine's next."""
        run = to_rerun(self.runs, self.procs)
        if run is not None:
            return run
        if self.count is not None and len(self.runs) >= self.count:
            return None
        params = next_params(self.config, self.runs, self.metric_name)
        if params is None:  # a grid with every point taken
            return None
        run = RunRecord(id=f"run-{len(self.runs):03d}", params=params)
        self.runs.append(run)
        return run

    # --- processes ---
    def command_for(self, run: RunRecord) -> list[str]:
        """The agent's command line; a run stopped by a signal goes on from its checkpoint."""
        argv = agent_command(self.config, run.params)
        checkpoint = interrupted_checkpoint(run)
        if checkpoint is not None:
            argv += ["--ckpt_path", str(checkpoint)]
        return argv

    def start(self, run: RunRecord) -> None:
        run.attempts += 1
        run.attempts_left = False
        argv = self.command_for(run)
        report_path = self.store.report_path(run)
        env = dict(os.environ)
        # as wandb's agent does: a run must start its own wandb service, not attach to one
        # this process (or its parent) started
        env.pop("WANDB_SERVICE", None)
        env[REPORT_ENV] = str(report_path.resolve())
        env.setdefault("WANDB_MODE", "offline")
        env["WANDB_RUN_GROUP"] = self.name  # the sweep is the wandb group
        # the runner's own environment first on PATH, so `${env} lit-loops` finds this install
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
        # share the cores: K workers get cores // K threads each (unless the user chose)
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // self.workers)))
        report_path.unlink(missing_ok=True)
        log = open(self.store.log_path(run), "w")
        log.write(" ".join(argv) + "\n\n")
        log.flush()
        # own session: Ctrl-C reaches the runner, which stops its runs itself (see stop_all)
        proc = subprocess.Popen(
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        run.state, run.returncode, run.metric, run.steps = "running", None, None, None
        self.procs[run.id] = (proc, time.time(), log)
        self.out(f"[{self.name}] start {run.id}: {format_params(run.params)}")
        self.save()

    def reap(self) -> None:
        """Reads every run's report; records the runs that ended."""
        for run_id, (proc, started, log) in list(self.procs.items()):
            run = self.by_id(run_id)
            report = self.store.read_report(run)
            if report is not None:
                run.history, run.run_dir = report["history"], report["run_dir"]
            if proc.poll() is None:
                continue
            log.close()
            del self.procs[run_id]
            run.wall_s = round(time.time() - started, 1)
            run.returncode = proc.returncode
            if report is not None:
                run.steps = report["steps"]
                run.metric = report["summary"].get(self.metric_name)
            if run.state == "stopped":
                pass  # stopped by early termination: its last report stands
            elif proc.returncode == 0 and report is not None and report["finished"]:
                run.state = "finished"
                self.successes_this_session += 1
                if self.metric_name not in report["summary"]:
                    self.out(
                        f"[{self.name}] warning: {run.id} never logged {self.metric_name!r}; "
                        f"it logged {sorted(report['summary'])}"
                    )
            else:
                run.state = "crashed"
                self.failures_this_session += 1
            metric = format_metric(run.metric)
            self.out(
                f"[{self.name}] {run.state} {run.id}: {self.metric_name}={metric} "
                f"steps={run.steps} wall={run.wall_s}s"
                + (f"  (exit {proc.returncode}, see {log.name})" if run.state == "crashed" else "")
            )
            self.save()

    def early_terminate(self) -> None:
        if not self.procs:
            return
        for run_id in runs_to_stop(self.config, self.runs, self.metric_name):
            run = self.by_id(run_id)
            if run.id in self.procs and run.state == "running":
                run.state = "stopped"
                self.out(f"[{self.name}] early termination stops {run.id}")
                self.procs[run.id][0].send_signal(signal.SIGTERM)

    def stop_all(self, grace_s: float = 30.0) -> None:
        """Ctrl-C: stop every run; they count as interrupted and rerun on a restart."""
        for proc, _, _ in self.procs.values():
            proc.send_signal(signal.SIGTERM)
        deadline = time.time() + grace_s
        for run_id, (proc, _, log) in list(self.procs.items()):
            try:
                proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
            run = self.by_id(run_id)
            run.state = "crashed"
            report = self.store.read_report(run)
            if report is not None:  # where its interrupted.ckpt went, if it got that far
                run.run_dir = report["run_dir"]
        self.procs.clear()
        self.save()

    # --- the loop ---
    def run(self) -> list[RunRecord]:
        self.open()
        if self.runs:
            self.out(
                f"[{self.name}] resuming: {sum(r.state in DONE_STATES for r in self.runs)} "
                f"runs done, {sum(r.state in RERUN_STATES for r in self.runs)} to run again"
            )
        exhausted = False
        try:
            while True:
                self.reap()
                self.early_terminate()
                if (
                    self.successes_this_session == 0
                    and self.failures_this_session >= MAX_INITIAL_FAILURES
                ):
                    raise RuntimeError(
                        f"the first {self.failures_this_session} runs of sweep {self.name!r} "
                        f"all crashed: see {self.folder / 'logs'}"
                    )
                while not exhausted and len(self.procs) < self.workers:
                    run = self.propose()
                    if run is None:
                        exhausted = True
                        break
                    self.start(run)
                if exhausted and not self.procs:
                    break
                time.sleep(self.poll_s)
        except KeyboardInterrupt:
            self.out(f"[{self.name}] interrupted: stopping {len(self.procs)} runs")
            self.stop_all()
            raise
        return self.runs
