"""Name each run from its hyperparameters, and give it one folder.

``RunName("oocl_{op}_{p}_{holdout1}_{holdout2}_{k1}_{k2}_{k3}")`` gives
``oocl_ssq_97_0.8_0.8_1.0_1.0_1.0``: the template's fields are the model's and the
DataModule's hyperparameters, plus ``experiment`` (the package under
``lit_loops.experiments``). Floats print as Python prints them (``0.8``, ``1.0``); a
field may carry a format spec (``{lr:.0e}``).

Nested hyperparameters (``hparams["net"] = {"n_layers": 2, ...}``, from
``--model.init_args.net.n_layers``) are flattened: each leaf is a field by its own name
(``{n_layers}``) and by its path joined with ``_`` (``{net_n_layers}``). A top-level
hyperparameter wins over a nested leaf of the same name; a leaf name found at two nested
places with different values is only available by its path.

Each run gets ``<root>/<name>/<version>/`` (``version`` = time stamp + random suffix,
the same on every rank; a wandb agent's ``WANDB_RUN_ID`` when set) holding its resolved ``config.yaml``, ``checkpoints/`` (for
every ``ModelCheckpoint`` without a ``dirpath``) and the CSV/TensorBoard logs. The
wandb run takes the name, the version as its id, and the group (``WANDB_RUN_GROUP``
wins, as wandb sweep agents set it).
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import string
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
from jsonargparse import Namespace
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_info

from lit_loops.lightning_internals import set_log_dir_name, set_wandb_init, wandb_run_or_none


def experiment_of(obj: Any) -> str:
    """``lit_loops.experiments.oocl.module`` -> ``oocl``; otherwise the class name, lowercased."""
    parts = type(obj).__module__.split(".")
    if "experiments" in parts and parts.index("experiments") + 1 < len(parts):
        return parts[parts.index("experiments") + 1]
    return type(obj).__name__.lower()


def hparams_of(obj: Any) -> dict[str, Any]:
    return dict(getattr(obj, "hparams", {}) or {})


def _as_mapping(value: Any) -> Mapping | None:
    """A nested group of hyperparameters as a mapping (a dict, a dataclass, a jsonargparse
    Namespace); None for a leaf."""
    if isinstance(value, Mapping):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Namespace):
        return value.as_dict()
    return None


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # tensors, arrays: not one truth value
        return a is b


def nested_fields(*hparams: Mapping[str, Any]) -> dict[str, Any]:
    """The leaves of the nested groups in ``hparams``: ``{"n_layers": 2, "net_n_layers": 2}``
    for ``{"net": {"n_layers": 2}}``. A leaf name met at several places with different
    values is left out (only its paths are given); for a path met twice, the later wins."""
    by_path: dict[str, Any] = {}
    by_leaf: dict[str, Any] = {}
    ambiguous: set[str] = set()

    def walk(prefix: tuple[str, ...], mapping: Mapping) -> None:
        for key, value in mapping.items():
            group = _as_mapping(value)
            if group is not None:
                walk((*prefix, str(key)), group)
            elif prefix:
                by_path["_".join((*prefix, str(key)))] = value
                if key in by_leaf and not _same(by_leaf[key], value):
                    ambiguous.add(key)
                by_leaf.setdefault(key, value)

    for hp in hparams:
        walk((), hp)
    return {**{k: v for k, v in by_leaf.items() if k not in ambiguous}, **by_path}


class RunName(Callback):
    """Builds the run's name from ``template`` and gives the run its folder.

    Args:
        template: ``str.format`` template over the model and data hyperparameters and
            ``experiment``.
        group: wandb group template (same fields); default ``{experiment}``.
        root: where run folders go when no logger says (``runs``).
    """

    def __init__(
        self, template: str = "{experiment}", group: str = "{experiment}", root: str = "runs"
    ) -> None:
        for name, value in (("template", template), ("group", group)):
            try:
                list(string.Formatter().parse(value))
            except ValueError as err:
                raise ValueError(
                    f"{name}={value!r} is invalid: not a format template ({err})"
                ) from None
        self.template = template
        self.group_template = group
        self.root = root
        self.name: str | None = None
        self.version: str | None = None
        self.run_dir: Path | None = None

    def fields(
        self, model: L.LightningModule, datamodule: L.LightningDataModule | None
    ) -> dict[str, Any]:
        data_hp = hparams_of(datamodule) if datamodule is not None else {}
        model_hp = hparams_of(model)
        fields = {
            **nested_fields(data_hp, model_hp),  # the top-level names win over nested leaves
            **data_hp,
            **model_hp,
            "experiment": experiment_of(model),
        }
        # lists read as 2-3 (or none) in a folder name, not [2, 3] (brackets trip up shells)
        return {
            k: ("-".join(map(str, v)) or "none") if isinstance(v, (list, tuple)) else v
            for k, v in fields.items()
        }

    def format(self, template: str, fields: dict[str, Any]) -> str:
        try:
            return template.format(**fields)
        except (KeyError, IndexError) as err:
            raise ValueError(
                f"RunName template={template!r} is invalid: unknown field {err}; "
                f"available: {sorted(fields)}"
            ) from None

    def apply(
        self, trainer: L.Trainer, model: L.LightningModule, datamodule: L.LightningDataModule | None
    ) -> None:
        """Name the run and point the loggers and checkpoints at its folder (idempotent)."""
        if self.run_dir is not None:
            return
        fields = self.fields(model, datamodule)
        self.name = self.format(self.template, fields)
        group = os.environ.get("WANDB_RUN_GROUP") or self.format(self.group_template, fields)
        # a wandb sweep agent names the run it started (WANDB_RUN_ID): keep that id, or the
        # server would not count the run as the sweep's
        stamp = os.environ.get("WANDB_RUN_ID") or (
            time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)
        )
        self.version = trainer.strategy.broadcast(stamp)  # one folder for all ranks
        root = (
            Path(trainer.loggers[0].save_dir)
            if trainer.loggers and trainer.loggers[0].save_dir
            else Path(self.root)
        )
        self.run_dir = root / self.name / self.version
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                if wandb_run_or_none(logger) is None:  # not started: name, id and group take effect
                    set_wandb_init(logger, name=self.name, group=group, id=self.version)
                else:  # created already: only the display name can still change
                    logger.experiment.name = self.name
            elif isinstance(logger, (CSVLogger, TensorBoardLogger)):
                # Their log_dir is <save_dir>/<name>/<version>: the run folder.
                set_log_dir_name(logger, self.name, self.version)
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
                callback.dirpath = str(self.run_dir / "checkpoints")
        rank_zero_info(f"Run: {self.name}  ({self.run_dir})")

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # The CLI applies the name before the loggers start; a hand-built Trainer gets it here.
        self.apply(trainer, pl_module, trainer.datamodule)

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version}


def find_run_name(trainer: L.Trainer) -> RunName | None:
    return next((cb for cb in trainer.callbacks if isinstance(cb, RunName)), None)
