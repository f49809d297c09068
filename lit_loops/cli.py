"""The ``lit-loops`` command: LightningCLI in subclass mode for model and data.

    lit-loops fit --config configs/oocl/cpu.yaml [--config more.yaml] [--model.init_args.k2=0]
    lit-loops validate --config configs/oocl/cpu.yaml --ckpt_path runs/.../checkpoints/best.ckpt
    lit-loops sweep configs/sweeps/oocl_linkage.yaml [--workers 2] [--count N]   (lit_loops.sweep)

What this subclass adds to LightningCLI:
* arguments the data decides (``vocab_size``, ``seq_len``, ...: whatever the DataModule's
  ``model_args()`` returns) are filled into the model's arguments, never repeated by hand;
* wandb, offline, project ``lit-loops``, under ``runs/`` is the default logger;
* every run is named by a ``RunName`` callback (a default one if the config has none) and
  saves its resolved config in its own folder and in wandb, so the same config runs
  twice in one folder;
* after ``fit`` it prints the run name, steps, wall time, best checkpoint and metrics.
"""

from __future__ import annotations

import inspect
import os
import signal
import sys
import time
from typing import Any

import lightning as L
from jsonargparse import Namespace
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lit_loops.callbacks.curriculum import CurriculumLog
from lit_loops.callbacks.interrupt import CheckpointOnInterrupt
from lit_loops.callbacks.nonfinite import NonFiniteLossError, NonFiniteLossGuard
from lit_loops.callbacks.run_name import RunName, find_run_name
from lit_loops.callbacks.sweep_report import REPORT_ENV, SweepReport
from lit_loops.checkpoints import check_checkpoint_fits, import_object, load_checkpoint_checked
from lit_loops.lightning_internals import (
    CLI_PARSE_CKPT_PATH,
    close_wandb_run,
    wandb_is_offline,
)


def default_logger() -> dict[str, Any]:
    # Offline unless the user asks for online (WANDB_MODE=online), so no run needs a network.
    offline = os.environ.get("WANDB_MODE", "offline") not in ("online", "run")
    return {
        "class_path": "lightning.pytorch.loggers.WandbLogger",
        "init_args": {"project": "lit-loops", "save_dir": "runs", "offline": offline},
    }


class SaveRunConfig(SaveConfigCallback):
    """Saves the resolved config as ``<run folder>/config.yaml`` and into the wandb run."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.already_saved:
            return
        run_name = find_run_name(trainer)
        run_name.apply(trainer, pl_module, trainer.datamodule)
        if trainer.is_global_zero:
            run_name.run_dir.mkdir(parents=True, exist_ok=True)
            self.parser.save(
                self.config,
                str(run_name.run_dir / self.config_filename),
                skip_none=False,
                overwrite=True,
                multifile=self.multifile,
            )
            for logger in trainer.loggers:
                if isinstance(logger, WandbLogger):
                    logger.experiment.config.update(
                        {"cli": self.config.as_dict()}, allow_val_change=True
                    )
        self.already_saved = True


class LitLoopsCLI(LightningCLI):
    def __init__(self, args: Any = None, run: bool = True) -> None:
        self._start_time = time.time()
        super().__init__(
            L.LightningModule,
            L.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=SaveRunConfig,
            save_config_kwargs={"overwrite": True},
            trainer_defaults={"logger": default_logger()},
            auto_configure_optimizers=False,  # each module's configure_optimizers holds its recipe
            args=args,
            run=run,
        )

    # --- arguments the data decides ------------------------------------------------
    def instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        fill_data_decided_args(config)
        try:
            super().instantiate_classes()
        except ValueError as err:
            raise model_error(config) or err from None

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        given = config["trainer"].get("callbacks")  # the config's own (Lightning extends it)
        given = list(given) if isinstance(given, list) else [given] if given else []
        trainer = super().instantiate_trainer(**kwargs)
        add_experiment_callbacks(trainer, self.model, given)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and not wandb_is_offline(logger):
                check_wandb_login()
        # every run: a checkpoint on SIGTERM / Ctrl-C, and a guard against non-finite losses
        for default in (NonFiniteLossGuard, CheckpointOnInterrupt):  # a skip is undone first
            if not any(isinstance(cb, default) for cb in trainer.callbacks):
                trainer.callbacks.append(default())
        if os.environ.get(REPORT_ENV):  # started by `lit-loops sweep`: report metrics to it
            trainer.callbacks.append(SweepReport(os.environ[REPORT_ENV]))
        return trainer

    # --- run naming before any logger starts ------------------------------------------
    # A private LightningCLI hook (lightning_internals.CLI_PARSE_CKPT_PATH checks at import
    # that LightningCLI still has it; tests/test_lightning_internals.py that it is called).
    def _parse_ckpt_path(self) -> None:
        # Lightning reads the checkpoint's hyperparameters into the model's config here
        # (so a resumed run rebuilds the model it saved): check the file first
        subcommand = self.config.get("subcommand")
        if subcommand:
            config = self.config[subcommand]
            model = config.get("model")
            self._checkpoint = load_checkpoint_checked(
                config.get("ckpt_path"), getattr(model, "class_path", None)
            )
        super()._parse_ckpt_path()

    def _name_run(self) -> None:
        if getattr(self, "_checkpoint", None) is not None:
            ckpt_path = self.config[self.subcommand].get("ckpt_path")
            check_checkpoint_fits(ckpt_path, self._checkpoint, self.model)
            self._checkpoint = None  # not kept in memory during the run
        find_run_name(self.trainer).apply(self.trainer, self.model, self.datamodule)

    before_fit = before_validate = before_test = before_predict = _name_run

    def _finish_wandb(self) -> None:
        # Close the wandb run, so that a second command in the same process starts its own.
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger):
                close_wandb_run(logger)

    after_validate = after_test = after_predict = _finish_wandb

    def after_fit(self) -> None:
        self._print_summary()
        self._finish_wandb()

    @rank_zero_only
    def _print_summary(self) -> None:
        trainer = self.trainer
        run_name = find_run_name(trainer)
        lines = [
            "",
            f"Run:       {run_name.name}",
            f"Folder:    {run_name.run_dir}",
            f"Steps:     {trainer.global_step}",
            f"Wall time: {time.time() - self._start_time:.1f} s",
        ]
        ckpt = trainer.checkpoint_callback
        if ckpt is not None and ckpt.best_model_path:
            score = ckpt.best_model_score  # None without a monitor: the last one is the best
            best = "" if score is None else f"{ckpt.monitor}={float(score):.6g}  "
            lines.append(f"Best:      {best}{ckpt.best_model_path}")
        lines.append("Final metrics (last logged values):")
        for key in sorted(trainer.callback_metrics):
            lines.append(f"  {key:<24} {float(trainer.callback_metrics[key]):.6g}")
        print("\n".join(lines), flush=True)


# the override above must keep the name of the LightningCLI hook that lightning_internals checks
if CLI_PARSE_CKPT_PATH not in vars(LitLoopsCLI):  # pragma: no cover
    raise RuntimeError(f"LitLoopsCLI no longer overrides LightningCLI.{CLI_PARSE_CKPT_PATH}")


def add_experiment_callbacks(
    trainer: L.Trainer, model: L.LightningModule, given: list[L.Callback]
) -> None:
    """The callbacks every experiment's config would otherwise repeat, from what its module
    declares (``ExperimentModule.run_name`` and ``.monitor``): a ``RunName``, a
    ``CurriculumLog``, and in place of Lightning's default checkpoint one that keeps the
    best by the module's metric and the last. A config that lists its own keeps it."""
    if find_run_name(trainer) is None:
        trainer.callbacks.insert(0, RunName(getattr(model, "run_name", "{experiment}")))
    if not any(isinstance(cb, CurriculumLog) for cb in trainer.callbacks):
        trainer.callbacks.insert(1, CurriculumLog())
    monitor = getattr(model, "monitor", None)
    if monitor is None or any(isinstance(cb, ModelCheckpoint) for cb in given):
        return
    metric, mode = monitor
    for i, cb in enumerate(trainer.callbacks):
        if isinstance(cb, ModelCheckpoint):  # Lightning's default (checkpointing is on)
            trainer.callbacks[i] = ModelCheckpoint(
                monitor=metric,
                mode=mode,
                filename=f"step{{step:06d}}-{metric.split('/')[-1]}{{{metric}:.4f}}",
                auto_insert_metric_name=False,
                save_last=True,
            )


def model_error(config: Namespace) -> ValueError | None:
    """The model's own ``ValueError``, which jsonargparse buries in a "Does not validate
    against any of the Union subtypes" report: building the model once more (only after a
    failure) gets the one clear line back."""
    model_cfg = config.get("model")
    if model_cfg is None or not hasattr(model_cfg, "class_path"):
        return None
    init_args = model_cfg.init_args.as_dict() if model_cfg.get("init_args") else {}
    try:
        import_object(model_cfg.class_path)(**init_args)
    except ValueError as err:
        return err
    except Exception:
        return None
    return None


def fill_data_decided_args(config: Namespace) -> None:
    """Copy the DataModule's ``model_args()`` into the model's init_args.

    The DataModule is built once here from its own arguments (cheap: DataModules build
    their data in ``setup``). A value set by hand that disagrees with the data is an error.
    """
    data_cfg, model_cfg = config.get("data"), config.get("model")
    if data_cfg is None or model_cfg is None or not hasattr(data_cfg, "class_path"):
        return
    data_cls = import_object(data_cfg.class_path)
    if not hasattr(data_cls, "model_args"):
        return
    data_args = data_cfg.init_args.as_dict() if data_cfg.get("init_args") else {}
    decided = data_cls(**data_args).model_args()
    accepted = inspect.signature(import_object(model_cfg.class_path).__init__).parameters
    if model_cfg.get("init_args") is None:
        model_cfg.init_args = Namespace()
    for key, value in decided.items():
        if key not in accepted:
            continue
        given = model_cfg.init_args.get(key)
        if given is not None and given != value:
            raise ValueError(
                f"model.init_args.{key}={given!r} is invalid: the data decides it "
                f"({data_cfg.class_path} gives {key}={value!r}); leave it unset"
            )
        model_cfg.init_args[key] = value


def check_wandb_login() -> None:
    """Online wandb with no credentials would prompt, or wait on a network: fail at once."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return
    import netrc
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    path = os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    try:
        if netrc.netrc(path).authenticators(host):  # where `wandb login` stores the key
            return
    except (FileNotFoundError, netrc.NetrcParseError):
        pass
    raise ValueError(
        f"wandb is online (WANDB_MODE=online or logger offline=false) but no API key for {host} "
        "is set: run `wandb login` (or set WANDB_API_KEY), or leave WANDB_MODE unset to log "
        "offline (the default; `wandb sync` uploads later)"
    )


def main(args: Any = None) -> None:
    argv = sys.argv[1:] if args is None else args
    if isinstance(argv, list) and argv[:1] == ["sweep"]:
        from lit_loops.sweep import main as sweep_main  # the sweep engine loads only when asked

        sys.exit(sweep_main(argv[1:]))
    try:
        LitLoopsCLI(args=args)
    except SIGTERMException as err:  # CheckpointOnInterrupt saved a checkpoint and said where
        sys.exit(128 + getattr(err, "signum", signal.SIGTERM))
    except (ValueError, NonFiniteLossError) as err:
        # a user's mistake or a diverged run: the message says what and where; the
        # traceback (LIT_LOOPS_DEBUG=1) is for the developers
        if os.environ.get("LIT_LOOPS_DEBUG"):
            raise
        print(f"lit-loops: error: {err}", file=sys.stderr)
        sys.exit(1 if isinstance(err, NonFiniteLossError) else 2)


if __name__ == "__main__":
    main()
