"""Every config in configs/ runs through the real CLI with fast_dev_run.

A config with a ``model:`` class_path is a base config; any other file in an experiment's
folder is an override, run stacked on that folder's cpu.yaml.
"""

import pytest
import yaml

from conftest import CONFIGS, cli

SKIP_DIRS = {"logger", "sweeps"}  # logger presets are run in test_cli.py


def is_base(path):
    config = yaml.safe_load(path.read_text()) or {}
    return "class_path" in (config.get("model") or {})


def config_stacks():
    for path in sorted(CONFIGS.glob("*/*.yaml")):
        if path.parent.name in SKIP_DIRS:
            continue
        if is_base(path):
            yield pytest.param([path], id=f"{path.parent.name}/{path.name}")
        else:
            yield pytest.param(
                [path.parent / "cpu.yaml", path], id=f"{path.parent.name}/cpu+{path.name}"
            )


@pytest.mark.parametrize("stack", list(config_stacks()))
def test_config_runs_with_fast_dev_run(in_tmp, stack):
    args = [arg for path in stack for arg in ("--config", path)]
    run = cli("fit", *args, "--trainer.fast_dev_run=true", "--trainer.enable_progress_bar=false")
    assert run.trainer.global_step == 1
    expected = {}  # later files override earlier ones
    for path in stack:
        config = yaml.safe_load(path.read_text())
        expected.update((config.get("model") or {}).get("init_args") or {})
    for key, value in expected.items():  # what the files say is what the run got
        assert run.model.hparams[key] == value, key


def test_there_is_a_cpu_and_a_paper_config_per_experiment():
    for folder in CONFIGS.iterdir():
        if folder.is_dir() and folder.name not in SKIP_DIRS:
            assert (folder / "cpu.yaml").exists() and (folder / "paper.yaml").exists(), folder
