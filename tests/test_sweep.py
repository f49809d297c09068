"""Sweep files and the local sweep runner (``lit-loops sweep``, lit_loops/sweep/).

Every file in configs/sweeps/ is checked against wandb's sweep schema, and a run it would
start (its command expanded by wandb's own agent code) is parsed and built by the CLI. The
runner is exercised end to end on a tiny grid: real ``lit-loops fit`` processes, two at a
time, interrupted and resumed.
"""

import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import CONFIGS
from lit_loops.cli import LitLoopsCLI
from lit_loops.sweep import (
    LocalSweep,
    RunRecord,
    agent_command,
    format_table,
    load_sweep,
    main,
    plot_sweep,
)
from lit_loops.sweep.engine import import_sweeps

SWEEPS = sorted((CONFIGS / "sweeps").glob("*.yaml"))
EXPERIMENTS = {"subleq", "icl", "sequences", "oocl", "block_recurrent"}


@pytest.fixture
def in_repo_tmp(tmp_path, monkeypatch):
    """A temporary working folder where ``configs/...`` resolves as in the repository."""
    (tmp_path / "configs").symlink_to(CONFIGS)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_every_experiment_has_a_sweep():
    experiments = set()
    for path in SWEEPS:
        command = load_sweep(path)["command"]
        base = command[command.index("--config") + 1]
        experiments.add(Path(base).parts[1])
    assert experiments == EXPERIMENTS


def test_the_showcase_and_a_random_or_bayes_sweep_exist():
    showcase = load_sweep(CONFIGS / "sweeps" / "oocl_linkage.yaml")
    assert showcase["method"] == "grid" and showcase["metric"]["name"] == "val/acc_table1"
    ks = [
        yaml.safe_load((CONFIGS.parent / p).read_text())["model"]["init_args"]
        for p in showcase["parameters"]["config"]["values"]
    ]
    assert [(k["k1"], k["k2"], k["k3"]) for k in ks] == [(1, 0, 0), (1, 1, 0), (1, 1, 1)]
    assert len(showcase["parameters"]["data.init_args.holdout1"]["values"]) >= 3
    assert {load_sweep(p)["method"] for p in SWEEPS} >= {"grid", "random", "bayes"}


def check_applied(run: LitLoopsCLI, params: dict) -> None:
    """Each swept value reached the object it names."""
    for key, value in params.items():
        section, _, name = key.partition(".init_args.")
        if section in ("model", "data") and name:
            target = run.model if section == "model" else run.datamodule
            got = target.hparams
            for part in name.split("."):  # net.n_layers: hparams["net"]["n_layers"]
                got = got[part]
            assert (list(got) if isinstance(got, tuple) else got) == value, key
        elif key == "trainer.max_steps":
            assert run.trainer.max_steps == value
        elif key == "seed_everything":
            assert run.config["seed_everything"] == value
        elif key == "config":
            overrides = yaml.safe_load((CONFIGS.parent / value).read_text())["model"]["init_args"]
            for name, expected in overrides.items():
                assert_contains(run.model.hparams[name], expected, (value, name))


def assert_contains(got, expected, where) -> None:
    """``expected`` (a YAML override) holds in ``got``: nested mappings compared key by
    key (an override sets some fields of a config dataclass), lists as lists."""
    if isinstance(expected, dict):
        for name, value in expected.items():
            field = got[name] if isinstance(got, dict) else getattr(got, name)
            assert_contains(field, value, (*where, name))
    else:
        assert (list(got) if isinstance(got, tuple) else got) == expected, where


@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_sweep_file_is_valid_and_the_agent_command_parses(in_repo_tmp, path):
    config = load_sweep(path)  # wandb's JSON schema plus our checks
    assert config["command"][:3] == ["${env}", "lit-loops", "fit"]
    top_level = ("config", "seed_everything")
    assert all("." in k or k in top_level for k in config["parameters"]), "flat dotted names"
    suggestion = import_sweeps().next_run(config, [])
    params = {k: v["value"] for k, v in suggestion.config.items()}
    argv = agent_command(config, params)
    assert argv[:3] == ["/usr/bin/env", "lit-loops", "fit"]
    assert all(f"--{k}={v}" in argv for k, v in params.items())
    run = LitLoopsCLI(args=argv[3:], run=False)
    check_applied(run, params)


@pytest.mark.parametrize(
    "path",
    [p for p in SWEEPS if load_sweep(p)["method"] == "grid"],
    ids=lambda p: p.stem,
)
def test_grid_sweeps_enumerate_their_whole_grid(path):
    config = load_sweep(path)
    sizes = [len(v["values"]) for v in config["parameters"].values() if "values" in v]
    seen = []
    while (suggestion := import_sweeps().next_run(config, seen)) is not None:
        seen.append(suggestion)
    assert len(seen) == math.prod(sizes)
    points = {json.dumps(s.config, sort_keys=True) for s in seen}
    assert len(points) == len(seen)


def test_agent_command_expands_args_as_the_wandb_agent_does():
    config = {"command": ["${env}", "${interpreter}", "x.py", "--fixed", "1", "${args}"]}
    argv = agent_command(config, {"model.init_args.optim.lr": 0.001, "flag": False, "ls": [1, 2]})
    assert argv == [
        "/usr/bin/env",
        sys.executable,
        "x.py",
        "--fixed",
        "1",
        "--model.init_args.optim.lr=0.001",
        "--flag=False",
        "--ls=[1, 2]",
    ]


BASE = {
    "method": "grid",
    "metric": {"name": "val/acc_table1", "goal": "maximize"},
    "parameters": {"model.init_args.optim.lr": {"values": [0.001]}},
    "command": ["${env}", "lit-loops", "fit", "${args}"],
}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"method": "annealing"}, "method='annealing' is invalid: must be one of"),
        ({"command": ["lit-loops", "fit"]}, "must be a list containing ${args}"),
        ({"metric": None}, "metric"),
        ({"parameters": {"model.init_args.optim.lr": {"values": "x"}}}, "model.init_args.optim.lr"),
    ],
)
def test_invalid_sweep_files_fail_with_the_reason(tmp_path, change, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**BASE, **change}))
    with pytest.raises(ValueError) as err:
        load_sweep(path)
    assert message in str(err.value) and "bad.yaml" in str(err.value)


def test_random_sweeps_need_a_count(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({**BASE, "method": "random"}))
    with pytest.raises(ValueError, match="never ends by itself: give --count"):
        LocalSweep(path, root=tmp_path)
    assert LocalSweep(path, root=tmp_path, count=3).count == 3
    with pytest.raises(ValueError, match="--workers=0 is invalid"):
        LocalSweep(path, root=tmp_path, workers=0, count=3)


def test_a_missing_sweep_file_is_an_error_not_a_traceback(tmp_path, capsys):
    assert main([str(tmp_path / "nope.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


# --- end to end on a tiny grid ---------------------------------------------------------------

TINY_RUN = {  # a few steps of configs/oocl/cpu.yaml: a real run, in seconds
    "trainer.max_steps": {"value": 4},
    "trainer.val_check_interval": {"value": 2},
    "trainer.limit_val_batches": {"value": 1},
    "trainer.enable_progress_bar": {"value": False},
    "trainer.enable_model_summary": {"value": False},
}


def tiny_grid(folder: Path, name: str, lrs=(0.001, 0.002), holdouts=(0.5, 0.9)) -> Path:
    path = folder / f"{name}.yaml"
    config = {
        "name": name,
        "method": "grid",
        "metric": {"name": "val/acc_table1", "goal": "maximize"},
        "parameters": {
            "data.init_args.holdout1": {"values": list(holdouts)},
            "model.init_args.optim.lr": {"values": list(lrs)},
            **TINY_RUN,
        },
        "command": ["${env}", "lit-loops", "fit", "--config", "configs/oocl/cpu.yaml", "${args}"],
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def state_of(folder: Path) -> dict:
    return {r["id"]: r for r in json.loads((folder / "state.json").read_text())["runs"]}


def test_tiny_grid_runs_resumes_and_writes_its_table(in_repo_tmp, capsys):
    path = tiny_grid(in_repo_tmp, "tinygrid_e2e")
    folder = in_repo_tmp / "runs" / "sweeps" / "tinygrid_e2e"

    # first session: stops after 2 runs (as if the machine went away)
    assert main([str(path), "--workers", "2", "--count", "2"]) == 0
    first = state_of(folder)
    assert sorted(first) == ["run-000", "run-001"]
    assert all(r["state"] == "finished" and r["steps"] == 4 for r in first.values())
    logs = {i: (folder / "logs" / f"{i}.log").stat().st_mtime_ns for i in first}

    # second session: only the rest of the grid runs
    assert main([str(path), "--workers", "2"]) == 0
    second = state_of(folder)
    assert sorted(second) == ["run-000", "run-001", "run-002", "run-003"]
    assert all(r["state"] == "finished" and r["metric"] is not None for r in second.values())
    assert {i: (folder / "logs" / f"{i}.log").stat().st_mtime_ns for i in first} == logs
    assert all(second[i]["attempts"] == 1 for i in second)
    points = {
        (r["params"]["data.init_args.holdout1"], r["params"]["model.init_args.optim.lr"])
        for r in second.values()
    }
    assert points == set(itertools.product((0.5, 0.9), (0.001, 0.002)))

    # a run the runner lost (killed machine: still "running" in state.json) runs again
    state = json.loads((folder / "state.json").read_text())
    state["runs"][1]["state"] = "running"
    (folder / "state.json").write_text(json.dumps(state))
    assert main([str(path)]) == 0
    third = state_of(folder)
    assert third["run-001"]["attempts"] == 2 and third["run-001"]["state"] == "finished"
    assert all(third[i]["attempts"] == 1 for i in ("run-000", "run-002", "run-003"))

    # the table: printed, as CSV, as a heatmap; each run in its own folder
    out = capsys.readouterr().out
    assert "holdout1" in out and "val/acc_table1" in out and "run-003" in out
    rows = (folder / "table.csv").read_text().splitlines()
    assert len(rows) == 5 and rows[0].startswith(
        "id,data.init_args.holdout1,model.init_args.optim.lr"
    )
    assert (folder / "val_acc_table1.png").stat().st_size > 10_000
    run_dirs = {r["run_dir"] for r in third.values()}
    assert len(run_dirs) == 4 and all((in_repo_tmp / d / "config.yaml").exists() for d in run_dirs)
    # disk: each run keeps its best and its last checkpoint, whatever the number of validations
    assert all(len(list((in_repo_tmp / d / "checkpoints").glob("*.ckpt"))) == 2 for d in run_dirs)
    # every run logged to wandb offline, grouped by the sweep
    offline = list((in_repo_tmp / "runs" / "wandb").glob("offline-run-*/*.wandb"))
    assert len(offline) == 5 and all(b"tinygrid_e2e" in f.read_bytes() for f in offline)


def test_ctrl_c_stops_the_runs_and_a_restart_reruns_them(in_repo_tmp):
    path = tiny_grid(in_repo_tmp, "interrupted", lrs=(0.001,), holdouts=(0.5, 0.9))
    folder = in_repo_tmp / "runs" / "sweeps" / "interrupted"
    runner = subprocess.Popen(
        [sys.executable, "-m", "lit_loops.cli", "sweep", str(path), "--workers", "2"],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        # Ctrl-C must reach the runner whatever this process inherited: a command started
        # with `&` from a non-interactive shell (a CI script, a background job) has SIGINT
        # ignored, that is inherited across exec, and Python then installs no handler
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 60
    while time.time() < deadline:  # wait until both runs are under way
        if (
            (folder / "state.json").exists()
            and all(r["state"] == "running" for r in state_of(folder).values())
            and len(state_of(folder)) == 2
        ):
            break
        time.sleep(0.2)
    else:
        pytest.fail("the runs never started")
    runner.send_signal(signal.SIGINT)
    assert runner.wait(timeout=60) == 130
    interrupted = state_of(folder)
    assert [r["state"] for r in interrupted.values()] == ["crashed", "crashed"]

    assert main([str(path), "--workers", "2"]) == 0
    resumed = state_of(folder)
    assert sorted(resumed) == ["run-000", "run-001"]  # the same runs, not new ones
    assert all(r["state"] == "finished" and r["attempts"] == 2 for r in resumed.values())


def test_a_crashing_run_is_reported_with_its_log(in_repo_tmp, capsys):
    path = tiny_grid(in_repo_tmp, "bad_lr", lrs=(-1.0,), holdouts=(0.5,))
    assert main([str(path)]) == 1  # not every run finished
    run = state_of(in_repo_tmp / "runs" / "sweeps" / "bad_lr")["run-000"]
    assert run["state"] == "crashed" and run["returncode"] != 0
    log = (in_repo_tmp / "runs" / "sweeps" / "bad_lr" / "logs" / "run-000.log").read_text()
    assert "lr" in log and "-1.0" in log
    assert "crashed" in capsys.readouterr().out


# --- early termination and plots, without processes -------------------------------------


class FakeProcess:
    def __init__(self):
        self.signals = []

    def send_signal(self, sig):
        self.signals.append(sig)


def test_hyperband_early_termination_stops_the_lagging_run(tmp_path):
    path = tmp_path / "hb.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                **BASE,
                "metric": {"name": "val/loss", "goal": "minimize"},
                "early_terminate": {"type": "hyperband", "min_iter": 2, "eta": 2},
                "parameters": {"model.init_args.optim.lr": {"values": [1, 2, 3, 4]}},
            }
        )
    )
    sweep = LocalSweep(path, root=tmp_path)
    sweep.out = lambda *_: None
    sweep.open()
    for i, losses in enumerate([[5, 4, 3], [5, 4.5, 4], [5, 5, 5], [6, 6, 6]]):
        run = RunRecord(f"run-{i:03d}", {"model.init_args.optim.lr": i + 1}, state="running")
        run.history = [{"step": s, "val/loss": v} for s, v in enumerate(losses)]
        sweep.runs.append(run)
        sweep.procs[run.id] = (FakeProcess(), 0.0, None)
    sweep.early_terminate()
    stopped = {r.id for r in sweep.runs if r.state == "stopped"}
    assert stopped and "run-000" not in stopped  # the best run goes on
    assert "run-003" in stopped
    assert all(sweep.procs[i][0].signals == [signal.SIGTERM] for i in stopped)


def test_plots_heatmap_for_two_parameters_and_scatter_otherwise(tmp_path):
    grid = [
        RunRecord(f"r{i}", {"h": h, "config": f"configs/oocl/{k}.yaml"}, "finished", metric=i / 6)
        for i, (h, k) in enumerate(itertools.product((0.5, 0.9), ("k100", "k110", "k111")))
    ]
    assert plot_sweep(grid, "m", "t", tmp_path / "heat.png").stat().st_size > 5_000
    table = format_table(grid, "m")
    assert "k110" in table and "configs/" not in table  # config files read as their stem
    scattered = [
        RunRecord(f"r{i}", {"lr": 10.0**-i, "wd": i / 10}, "finished", metric=i)
        for i in range(1, 5)
    ]
    assert plot_sweep(scattered, "m", "t", tmp_path / "scatter.png").exists()
    assert plot_sweep([], "m", "t", tmp_path / "none.png") is None


def test_a_run_stopped_by_a_signal_goes_on_from_its_checkpoint(tmp_path):
    path = tiny_grid(tmp_path, "resume_ckpt", lrs=(0.001,), holdouts=(0.5,))
    sweep = LocalSweep(path, root=tmp_path)
    run = RunRecord("run-000", {"model.init_args.optim.lr": 0.001}, state="crashed")
    assert "--ckpt_path" not in sweep.command_for(run)  # never got going: from scratch
    run.run_dir = str(tmp_path / "runs" / "x" / "v")
    (Path(run.run_dir) / "checkpoints").mkdir(parents=True)
    (Path(run.run_dir) / "checkpoints" / "interrupted.ckpt").write_bytes(b"")
    assert sweep.command_for(run)[-2:] == [
        "--ckpt_path",
        f"{run.run_dir}/checkpoints/interrupted.ckpt",
    ]
