"""Run a wandb sweep file on this machine, with no wandb server.

    lit-loops sweep configs/sweeps/oocl_linkage.yaml [--workers 2] [--count 12] [--dry-run]

The file is the one ``wandb sweep FILE`` takes. The W&B sweep engine itself (the ``sweeps``
package: the code the wandb server runs) proposes every run from the runs so far (grid,
random, bayes) and picks the runs to stop early (``early_terminate``, hyperband); each
run's command line is built by wandb's own agent code from the file's ``command``, so a run
here is exactly the process ``wandb agent`` would start. Runs log to wandb offline with the
sweep's name as their group (``wandb sync`` puts them online later) and report their
metrics back through :class:`~lit_loops.callbacks.sweep_report.SweepReport`.

Everything lives in ``runs/sweeps/<sweep name>/``::

    sweep.yaml        the sweep file as started (a changed file refuses to resume)
    state.json        every run: id, parameters, state, metric, steps, wall time, run folder
    reports/<id>.json what each run reported; logs/<id>.log its output
    table.csv         the table printed at the end; <metric>.png the metric against the parameters

Started again on the same file, it keeps the finished runs, reruns the crashed or
interrupted ones with the same parameters (from their ``interrupted.ckpt`` where a run got
to write one: Ctrl-C sends each run SIGTERM, see ``CheckpointOnInterrupt``), then asks the
engine for more.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lit_loops.callbacks.sweep_report import REPORT_ENV, write_json_atomically

DONE_STATES = ("finished", "stopped")  # "stopped": ended early by the engine's early termination
RERUN_STATES = ("pending", "running", "crashed")  # what a restart runs again
MAX_INITIAL_FAILURES = 5
METHODS = (
    "grid",
    "random",
    "bayes",
)  # what the engine proposes from (not "custom")  # as wandb's agent: a sweep whose first runs all crash is broken


def _engine():
    with warnings.catch_warnings():  # sweeps 0.3 still uses a pydantic-1 config key
        warnings.simplefilter("ignore")
        import sweeps
    return sweeps


# --- the sweep file ---------------------------------------------------------------------


def load_sweep(path: str | os.PathLike) -> dict[str, Any]:
    """Reads and validates a sweep file; every problem is a ``ValueError`` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"sweep file {str(path)!r} does not exist")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"sweep file {str(path)!r} is not valid YAML: {err}") from None
    check_sweep(config, str(path))
    return config


def check_sweep(config: Any, where: str = "sweep") -> None:
    import jsonschema

    if not isinstance(config, dict):
        raise ValueError(f"{where}: a sweep file is a mapping (method, metric, parameters, ...)")
    method = config.get("method")
    if method not in METHODS:  # the schema's own message would not name the key
        raise ValueError(f"{where}: method={method!r} is invalid: must be one of {METHODS}")
    metric = config.get("metric")
    if not isinstance(metric, dict) or "name" not in metric:
        raise ValueError(f"{where}: `metric: {{name: ..., goal: maximize|minimize}}` is required")
    command = config.get("command")
    if not isinstance(command, list) or "${args}" not in command:
        raise ValueError(
            f"{where}: `command` must be a list containing ${{args}}, e.g. "
            "[${env}, lit-loops, fit, --config, configs/<exp>/<variant>.yaml, ${args}]"
        )
    try:
        _engine().SweepConfig(config)  # wandb's JSON schema
    except jsonschema.ValidationError as err:
        raise ValueError(f"{where}: invalid sweep config: {err.message}") from None


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


# --- the runs -----------------------------------------------------------------------------


@dataclass
class RunRecord:
    id: str
    params: dict[str, Any]
    state: str = "pending"
    metric: float | None = None
    steps: int | None = None
    wall_s: float | None = None
    run_dir: str | None = None
    returncode: int | None = None
    attempts: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    # this session only (not saved): one try per invocation, so a run that always crashes
    # cannot loop; a restart tries it again
    attempts_left: bool = True

    def engine_run(self, metric_name: str):
        """This run as the sweep engine sees it (a run with no metric counts as failed)."""
        sweeps = _engine()
        if self.state in DONE_STATES:
            state = sweeps.RunState.finished if self.metric is not None else sweeps.RunState.failed
        elif self.state == "crashed":
            state = sweeps.RunState.crashed
        else:
            state = sweeps.RunState.running
        summary = {metric_name: self.metric} if self.metric is not None else {}
        return sweeps.SweepRun(
            name=self.id,
            state=state,
            config={k: {"value": v} for k, v in self.params.items()},
            summary_metrics=summary,
            history=[h for h in self.history if h.get(metric_name) is not None],
        )


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

    # --- persistent state ---
    def open(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "reports").mkdir(exist_ok=True)
        (self.folder / "logs").mkdir(exist_ok=True)
        saved = self.folder / "sweep.yaml"
        if saved.exists():
            if yaml.safe_load(saved.read_text()) != self.config:
                raise ValueError(
                    f"{saved} holds a different sweep under the name {self.name!r}: give the "
                    "sweep another `name:` or delete that folder to start over"
                )
        else:
            saved.write_text(yaml.safe_dump(self.config, sort_keys=False))
        state = self.folder / "state.json"
        if state.exists():
            self.runs = [RunRecord(**r) for r in json.loads(state.read_text())["runs"]]

    def save(self) -> None:
        write_json_atomically(
            self.folder / "state.json",
            {"sweep": self.name, "runs": [self._saved(r) for r in self.runs]},
        )

    @staticmethod
    def _saved(run: RunRecord) -> dict[str, Any]:
        record = asdict(run)
        del record["attempts_left"]
        return record

    # --- proposals ---
    def done_count(self) -> int:
        return sum(r.state in DONE_STATES for r in self.runs)

    def propose(self) -> RunRecord | None:
        """A run to start now: a crashed or interrupted one first, else the engine's next."""
        for run in self.runs:
            if run.state in RERUN_STATES and run.id not in self.procs and run.attempts_left:
                return run
        if self.count is not None and len(self.runs) >= self.count:
            return None
        suggestion = _engine().next_run(
            self.config, [r.engine_run(self.metric_name) for r in self.runs]
        )
        if suggestion is None:  # a grid with every point taken
            return None
        params = {k: v["value"] for k, v in suggestion.config.items()}
        run = RunRecord(id=f"run-{len(self.runs):03d}", params=params)
        self.runs.append(run)
        return run

    # --- processes ---
    def report_path(self, run: RunRecord) -> Path:
        return self.folder / "reports" / f"{run.id}.json"

    def command_for(self, run: RunRecord) -> list[str]:
        """The agent's command line; a run stopped by a signal goes on from its checkpoint."""
        argv = agent_command(self.config, run.params)
        if run.run_dir is not None:
            interrupted = Path(run.run_dir) / "checkpoints" / "interrupted.ckpt"
            if interrupted.exists():
                argv += ["--ckpt_path", str(interrupted)]
        return argv

    def start(self, run: RunRecord) -> None:
        run.attempts += 1
        run.attempts_left = False
        argv = self.command_for(run)
        env = dict(os.environ)
        # as wandb's agent does: a run must start its own wandb service, not attach to one
        # this process (or its parent) started
        env.pop("WANDB_SERVICE", None)
        env[REPORT_ENV] = str(self.report_path(run).resolve())
        env.setdefault("WANDB_MODE", "offline")
        env["WANDB_RUN_GROUP"] = self.name  # the sweep is the wandb group
        # the runner's own environment first on PATH, so `${env} lit-loops` finds this install
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
        # share the cores: K workers get cores // K threads each (unless the user chose)
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // self.workers)))
        self.report_path(run).unlink(missing_ok=True)
        log = open(self.folder / "logs" / f"{run.id}.log", "w")
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

    def read_report(self, run: RunRecord) -> dict[str, Any] | None:
        try:
            return json.loads(self.report_path(run).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def reap(self) -> None:
        for run_id, (proc, started, log) in list(self.procs.items()):
            run = self.by_id(run_id)
            report = self.read_report(run)
            if report is not None:
                run.history, run.run_dir = report["history"], report["run_dir"]
            if proc.poll() is None:
                continue
            log.close()
            del self.procs[run_id]
            run.wall_s = round(time.time() - started, 1)
            run.returncode = proc.returncode
            if report is not None:
                run.steps, run.run_dir = report["steps"], report["run_dir"]
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
            metric = "-" if run.metric is None else f"{run.metric:.4g}"
            self.out(
                f"[{self.name}] {run.state} {run.id}: {self.metric_name}={metric} "
                f"steps={run.steps} wall={run.wall_s}s"
                + (f"  (exit {proc.returncode}, see {log.name})" if run.state == "crashed" else "")
            )
            self.save()

    def early_terminate(self) -> None:
        if "early_terminate" not in self.config or not self.procs:
            return
        to_stop = _engine().stop_runs(
            self.config, [r.engine_run(self.metric_name) for r in self.runs]
        )
        for suggestion in to_stop:
            run = self.by_id(suggestion.name)
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
            report = self.read_report(run)
            if report is not None:  # where its interrupted.ckpt went, if it got that far
                run.run_dir = report["run_dir"]
        self.procs.clear()
        self.save()

    def by_id(self, run_id: str) -> RunRecord:
        return next(r for r in self.runs if r.id == run_id)

    # --- the loop ---
    def run(self) -> list[RunRecord]:
        self.open()
        kept = self.done_count()
        if self.runs:
            self.out(
                f"[{self.name}] resuming: {kept} runs done, "
                f"{sum(r.state in RERUN_STATES for r in self.runs)} to run again"
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


# --- the table and the plot --------------------------------------------------------------


def format_params(params: dict[str, Any]) -> str:
    return " ".join(f"{short_name(k)}={display_value(v)}" for k, v in params.items())


def short_name(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def display_value(value: Any) -> str:
    # a swept config file (`--config=configs/oocl/k110.yaml`) reads as its stem: k110
    if isinstance(value, str) and value.endswith((".yaml", ".yml")):
        return Path(value).stem
    return str(value)


def swept_keys(runs: list[RunRecord], order: list[str] | None = None) -> list[str]:
    """Parameters that take more than one value among the runs, in the file's order."""
    keys = list(dict.fromkeys([*(order or []), *(k for r in runs for k in r.params)]))
    return [k for k in keys if len({json.dumps(r.params.get(k)) for r in runs}) > 1]


def table_rows(
    runs: list[RunRecord], metric_name: str, order: list[str] | None = None
) -> list[dict[str, Any]]:
    keys = list(dict.fromkeys([*(order or []), *(k for r in runs for k in r.params)]))
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
    keys = swept_keys(runs, order) or list(dict.fromkeys(k for r in runs for k in r.params))
    header = ["run", *map(short_name, keys), metric_name, "steps", "wall", "state"]
    body = [
        [
            r.id,
            *(display_value(r.params.get(k)) for k in keys),
            "-" if r.metric is None else f"{r.metric:.4g}",
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
    if len(keys) == 2 and all(len({json.dumps(r.params[k]) for r in runs}) <= 12 for k in keys):
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


def _sort_key(value: Any) -> tuple:
    return (0, value, "") if _is_number(value) else (1, 0, display_value(value))


# --- command line ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lit-loops sweep",
        description="Run a wandb sweep file locally (no wandb server): the W&B sweep engine "
        "proposes the runs, each runs as `wandb agent` would start it.",
    )
    parser.add_argument("file", help="a sweep file, e.g. configs/sweeps/oocl_linkage.yaml")
    parser.add_argument("--workers", type=int, default=1, help="runs at once (default 1)")
    parser.add_argument(
        "--count",
        type=int,
        default=None,
        help="stop once the sweep holds this many runs, counting earlier sessions "
        "(default: run_cap, or the whole grid; required for random and bayes)",
    )
    parser.add_argument("--root", default="runs/sweeps", help="where sweep folders go")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the next command line and exit"
    )
    args = parser.parse_args(argv)
    try:
        sweep = LocalSweep(args.file, root=args.root, workers=args.workers, count=args.count)
        if args.dry_run:
            run = RunRecord("run-next", {})
            suggestion = _engine().next_run(sweep.config, [])
            run.params = {k: v["value"] for k, v in suggestion.config.items()}
            print(" ".join(agent_command(sweep.config, run.params)))
            return 0
        runs = sweep.run()
    except ValueError as err:
        print(f"lit-loops sweep: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: start the same command again to resume", file=sys.stderr)
        return 130
    finish(sweep, runs)
    return 0 if all(r.state in DONE_STATES for r in runs) else 1


def finish(sweep: LocalSweep, runs: list[RunRecord]) -> None:
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
