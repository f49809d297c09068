"""Every config in configs/ runs through the real CLI with fast_dev_run.

A config with a ``model:`` class_path is a base config; any other file in an experiment's
folder is an override, run stacked on that folder's paper.yaml (``paper_*.yaml``) or
cpu.yaml (``benchmarks.common.config_stacks``; presets are run in test_cli.py). Paper-scale configs are
meant for a GPU (one SUBLEQ paper step takes minutes on a CPU): the fast tier builds them
(model, data, trainer), the slow tier runs them.
"""

from pathlib import Path

import pytest
import yaml

from benchmarks.common import NOT_EXPERIMENTS, config_stacks, is_base_config
from conftest import CONFIGS, cli
from lit_loops.cli import LitLoopsCLI


def stacks():
    """(id, [config files]) for every runnable config (see ``config_stacks``)."""
    return list(config_stacks().items())


PAPER_SCALE = ("paper", "enwik8", "gpu")  # GPU configs: built in the fast tier, run in the slow one


def is_paper(stack):
    return any(path.name.startswith(PAPER_SCALE) for path in stack)


def reads_enwik8(stack):
    return any(
        ((yaml.safe_load(p.read_text()).get("data") or {}).get("init_args") or {}).get("source")
        == "enwik8"
        for p in stack
    )


def config_args(stack):
    args = [str(arg) for path in stack for arg in ("--config", path)]
    if reads_enwik8(stack):  # a small stand-in for the 100 MB file, written in the run folder
        fake = Path("enwik8_standin")
        fake.write_bytes(bytes(range(256)) * 200)
        args += [
            f"--data.init_args.path={fake}",
            "--data.init_args.enwik8_split=[30000,10000,10000]",
        ]
    return args


def merge(into: dict, new: dict) -> dict:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value
    return into


def flat(d: dict, prefix: str = "") -> dict:
    """``{"net": {"d_model": 8}}`` -> ``{"net.d_model": 8}``."""
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize("stack", [s for _, s in stacks()], ids=[i for i, _ in stacks()])
def test_config_builds(in_tmp, stack):
    """Every config parses and instantiates its model, data and trainer."""
    run = LitLoopsCLI(args=config_args(stack), run=False)
    assert run.model is not None and run.datamodule is not None and run.trainer is not None


@pytest.mark.parametrize(
    "stack",
    [pytest.param(s, id=i, marks=[pytest.mark.slow] if is_paper(s) else []) for i, s in stacks()],
)
def test_config_runs_with_fast_dev_run(in_tmp, stack):
    expected = {}  # later files override earlier ones, field by field in net: and optim:
    for path in stack:
        config = yaml.safe_load(path.read_text())
        merge(expected, (config.get("model") or {}).get("init_args") or {})
    # modules that accumulate gradients themselves step once per k batches
    k = expected.get("accumulate_grad_batches", 1)
    run = cli(
        "fit",
        *config_args(stack),
        f"--trainer.fast_dev_run={k}",
        "--trainer.enable_progress_bar=false",
    )
    assert run.trainer.global_step == 1
    for key, value in flat(expected).items():  # what the files say is what the run got
        got = flat(dict(run.model.hparams))[key]
        assert (list(got) if isinstance(got, tuple) else got) == value, key


def test_there_is_a_cpu_and_a_paper_config_per_experiment():
    """``cpu.yaml`` and ``paper.yaml``, or named variants of them (``cpu_<task>_<model>``;
    block_recurrent's paper-scale config is the seed's ``enwik8.yaml``)."""
    for folder in CONFIGS.iterdir():
        if folder.is_dir() and folder.name not in NOT_EXPERIMENTS:
            bases = [p.name for p in folder.glob("*.yaml") if is_base_config(p)]
            assert any(name.startswith("cpu") for name in bases), folder
            assert any(name.startswith(PAPER_SCALE) for name in bases), folder
