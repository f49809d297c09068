"""Write the compiled SUBLEQ machine (``lit_loops/experiments/subleq/compiled.py``, after
Giannou et al. 2023) as a checkpoint, for the machine a config's data describes.

    python scripts/subleq_compile.py --config configs/subleq/cpu.yaml --out compiled.ckpt
    python scripts/subleq_compile.py --config configs/subleq/cpu.yaml \\
        --config configs/subleq/cpu_seed_machine.yaml --out compiled_seed.ckpt

Later configs override earlier ones (dicts merge key by key, as ``lit-loops --config``
stacks them). The checkpoint holds a ``SubleqModule`` of kind ``compiled`` (its loss,
changed weight and optimizer from the config's model, its size from the machine) and the
config's ``SubleqDataModule``, with the class paths the CLI saves: ``load_run`` /
``SubleqModule.load_from_checkpoint``, ``scripts/subleq_rollout.py`` and ``lit-loops
validate --config CONFIG --ckpt_path FILE`` take it as they take a trained checkpoint.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import lightning
import torch
import yaml

from lit_loops.experiments.subleq.data import SubleqDataModule
from lit_loops.experiments.subleq.module import SubleqModule

INSTANTIATOR = "lightning.pytorch.cli.instantiate_module"  # what the CLI records
MODEL_ARGS = ("loss", "changed_weight", "optim")  # taken from the config's model


def class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def merge(base: dict, override: dict) -> dict:
    """``override`` on ``base``: dicts merge key by key, anything else is replaced."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(paths: list[str]) -> dict:
    config: dict = {}
    for path in paths:
        with open(path) as fh:
            part = yaml.safe_load(fh) or {}
        if not isinstance(part, dict):
            raise SystemExit(f"--config {path}: not a mapping")
        config = merge(config, part)
    return config


def build(config: dict) -> tuple[SubleqModule, SubleqDataModule]:
    """The compiled module and the DataModule of a merged config."""
    data = config.get("data") or {}
    if data.get("class_path", class_path(SubleqDataModule)) != class_path(SubleqDataModule):
        raise SystemExit(f"the config's data is {data['class_path']}, not a SubleqDataModule")
    datamodule = SubleqDataModule(**(data.get("init_args") or {}))
    model_args = (config.get("model") or {}).get("init_args") or {}
    spec = datamodule.spec
    module = SubleqModule(
        **datamodule.model_args(),
        **{k: model_args[k] for k in MODEL_ARGS if k in model_args},
        kind="compiled",
        machine={"s": spec.s, "m": spec.m, "N": spec.N},
    )
    return module.eval(), datamodule


def loops_state() -> dict:
    """The loops' progress of a fresh Trainer (step 0), which ``--ckpt_path`` restores."""
    quiet = logging.getLogger("lightning.pytorch")  # no "GPU available: ..." lines
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        trainer = lightning.Trainer(
            logger=False, enable_checkpointing=False, enable_progress_bar=False, devices=1
        )
    finally:
        quiet.setLevel(level)
    return {
        name: getattr(trainer, name).state_dict()
        for name in ("fit_loop", "validate_loop", "test_loop", "predict_loop")
    }


def checkpoint(module: SubleqModule, datamodule: SubleqDataModule) -> dict:
    """A Lightning checkpoint of ``module`` as the ``lit-loops`` CLI would save it."""

    def hparams(obj) -> dict:
        return {"_class_path": class_path(type(obj)), **obj.hparams, "_instantiator": INSTANTIATOR}

    return {
        "epoch": 0,
        "global_step": 0,
        "pytorch-lightning_version": lightning.__version__,
        "state_dict": module.state_dict(),
        "loops": loops_state(),
        "callbacks": {},
        "optimizer_states": [],
        "lr_schedulers": [],
        "hparams_name": "kwargs",
        "hyper_parameters": hparams(module),
        "datamodule_hparams_name": "kwargs",
        "datamodule_hyper_parameters": hparams(datamodule),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", action="append", required=True, help="a lit-loops config")
    parser.add_argument("--out", required=True, help="the checkpoint to write (.ckpt)")
    args = parser.parse_args()
    module, datamodule = build(load_config(args.config))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint(module, datamodule), out)
    params = list(module.model.parameters())
    total = sum(p.numel() for p in params)
    nonzero = sum(int((p != 0).sum()) for p in params)
    spec = datamodule.spec
    print(
        f"{out}: compiled SUBLEQ machine n={spec.n} s={spec.s} m={spec.m} N={spec.N} "
        f"(d={spec.d}), d_model {module.net.d_model}, {module.net.n_layers} blocks, "
        f"{total} parameters ({nonzero} non-zero)"
    )


if __name__ == "__main__":
    main()
