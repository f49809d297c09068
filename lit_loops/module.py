"""``ExperimentModule``: what every experiment's LightningModule shares.

* ``self.model``, the network (a plain ``nn.Module``, no Lightning inside), and
  ``self.optim``, its ``OptimConfig``: ``configure_optimizers`` is the one recipe of
  ``lit_loops.optim``;
* hyperparameters given as dataclasses (``net``, ``optim``) are stored as plain dicts in
  ``hparams``, so checkpoints load with ``weights_only`` and loggers flatten them
  (``optim/lr``); ``config_arg`` turns them back (a dict overrides the module's default
  instance, as a partial ``net:`` in a config file does);
* ``num_parameters`` (of the network), logged with the run's settings when fit starts;
* ``run_name`` (a ``RunName`` template) and ``monitor`` (the metric that picks the best
  checkpoint, and ``min`` or ``max``): the CLI's default ``RunName`` and ``ModelCheckpoint``
  read them when a config lists none, so configs need not repeat them;
* ``compile`` (every module's argument, off by default): the network's units compiled with
  ``torch.compile`` in place before the Trainer runs (``configure_model``; by hand:
  ``compile_network()``). See ``lit_loops.compile``.
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, is_dataclass, replace
from typing import Any, TypeVar

import lightning as L
from torch import nn

from lit_loops.checks import check
from lit_loops.compile import compile_network
from lit_loops.nn import num_parameters
from lit_loops.optim import OptimConfig, configure_optimizer

C = TypeVar("C")


def config_of(cls: type[C], value: Any, default: C | None = None, name: str = "") -> C:
    """``value`` as a ``cls``: the dataclass itself, or a dict of fields that override
    ``default`` (a module's own defaults, as a config file's partial ``net:`` does on the
    command line), or ``cls``'s defaults without one."""
    if isinstance(value, cls):
        return value
    what = name or cls.__name__
    check(isinstance(value, dict), what, value, f"must be a {cls.__name__} or a dict of its fields")
    return replace(default, **value) if default is not None else cls(**value)


class ExperimentModule(L.LightningModule):
    """Subclasses set ``self.model`` and ``self.optim`` in ``__init__`` (see the module docs)
    and pass their ``compile`` argument on: ``super().__init__(compile=compile)``."""

    model: nn.Module
    optim: OptimConfig
    run_name: str = "{experiment}"
    monitor: tuple[str, str] = ("val/loss", "min")

    def __init__(self, compile: bool = False) -> None:
        super().__init__()
        check(isinstance(compile, bool), "compile", compile, "must be true or false")
        self.compile_requested = compile

    def configure_model(self) -> None:
        # Lightning calls this before fit / validate / test / predict (and before
        # configure_optimizers): the network is compiled once, in place
        if self.compile_requested:
            self.compile_network()

    def compile_network(self) -> list[str]:
        """Compiles the network's units in place (``lit_loops.compile``; a second call does
        nothing new); returns their names."""
        return compile_network(self.model)

    def save_hyperparameters(self, *args, ignore=None, frame=None, logger: bool = True) -> None:
        # the caller's frame, as Lightning would read it had it been called directly
        frame = frame or inspect.currentframe().f_back
        super().save_hyperparameters(*args, ignore=ignore, frame=frame, logger=logger)
        for key, value in list(self.hparams.items()):
            if is_dataclass(value) and not isinstance(value, type):
                self.hparams[key] = asdict(value)

    def config_arg(self, name: str, value: Any) -> Any:
        """The dataclass argument ``name`` of this module's ``__init__`` (see ``config_of``;
        a dict overrides the signature's default instance)."""
        default = inspect.signature(type(self).__init__).parameters[name].default
        return config_of(type(default), value, default, name)

    @property
    def num_parameters(self) -> int:
        return num_parameters(self.model)

    def configure_optimizers(self) -> dict:
        trainer = self.trainer if self._trainer_attached() else None
        max_steps = trainer.max_steps if trainer is not None else -1
        return configure_optimizer(self.model, self.optim, max_steps)

    def _trainer_attached(self) -> bool:
        try:
            self.trainer  # noqa: B018  (raises when no Trainer holds this module)
        except RuntimeError:
            return False
        return True

    def on_fit_start(self) -> None:
        # The parameter count next to the run's other settings (wandb config, hparams).
        for logger in self.loggers:
            logger.log_hyperparams({"num_parameters": self.num_parameters})
