"""Every config in configs/ runs through the real CLI with fast_dev_run.

A config with a ``model:`` class_path is a base config; any other file in an experiment's
folder is an override, run stacked on that folder's cpu.yaml. Paper-scale configs are
meant for a GPU (one SUBLEQ paper step takes minutes on a CPU): the fast tier builds them
(model, data, trainer), the slow tier runs them.
"""

import pytest
import yaml

from conftest import CONFIGS, cli
from lit_loops.cli import LitLoopsCLI

SKIP_DIRS = {"logger", "sweeps"}  # logger presets are run in test_cli.py


def is_base(path):
    config = yaml.safe_load(path.read_text()) or {}
    return "class_path" in (config.get("model") or {})


def stacks():
    """(id, [config files]) for every runnable config."""
    for path in sorted(CONFIGS.glob("*/*.yaml")):
        if path.parent.name in SKIP_DIRS:
            continue
        if is_base(path):
            yield f"{path.parent.name}/{path.name}", [path]
        else:
            yield f"{path.parent.name}/cpu+{path.name}", [path.parent / "cpu.yaml", path]


def is_paper(stack):
    return any(path.name.startswith("paper") for path in stack)


def config_args(stack):
    return [str(arg) for path in stack for arg in ("--config", path)]


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
    run = cli(
        "fit",
        *config_args(stack),
        "--trainer.fast_dev_run=true",
        "--trainer.enable_progress_bar=false",
    )
    assert run.trainer.global_step == 1
    expected = {}  # later files override earlier ones
    for path in stack:
        config = yaml.safe_load(path.read_text())
        expected.update((config.get("model") or {}).get("init_args") or {})
    for key, value in expected.items():  # what the files say is what the run got
        assert run.model.hparams[key] == value, key


def test_there_is_a_cpu_and_a_paper_config_per_experiment():
    """``cpu.yaml`` and ``paper.yaml``, or named variants of them (``cpu_<task>_<model>``)."""
    for folder in CONFIGS.iterdir():
        if folder.is_dir() and folder.name not in SKIP_DIRS:
            bases = [p.name for p in folder.glob("*.yaml") if is_base(p)]
            assert any(name.startswith("cpu") for name in bases), folder
            assert any(name.startswith("paper") for name in bases), folder
