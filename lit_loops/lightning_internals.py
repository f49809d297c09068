"""Every use lit_loops makes of Lightning's private (or loop-internal) attributes, in one place.

Lightning has no public API for these; each function below names what it relies on and
raises a ``RuntimeError`` naming the Lightning version and the attribute when it is gone,
so that a Lightning upgrade fails here with one clear message rather than somewhere deep in
a run (or, for attributes that are only written, not at all). ``tests/test_lightning_internals.py``
checks each one against the installed Lightning.

Why each hook exists:

* ``batches_drawn`` (``trainer.fit_loop.epoch_loop.batch_progress.total.completed``): the
  on-the-fly training streams start a resumed run at the next *batch*; ``global_step``
  counts optimizer steps, which differ under gradient accumulation (``lit_loops.data``).
* ``current_batch_index`` (``trainer.fit_loop.epoch_loop.total_batch_idx``): whether a
  validation follows the current batch, so an interrupt can stop one step later
  (``callbacks.interrupt``).
* ``request_sigterm_stop`` (``trainer._signal_connector.received_sigterm``): Lightning's
  clean SIGTERM stop (every rank stops after the batch and raises ``SIGTERMException``);
  ``trainer.received_sigterm`` is read-only (``callbacks.interrupt``).
* ``wandb_run_or_none`` / ``close_wandb_run`` (``WandbLogger._experiment``): whether the
  wandb run was started yet (``logger.experiment`` would start it), and closing it so a
  second command in the same process starts its own run (``cli``, ``callbacks.run_name``).
* ``wandb_is_offline`` (``WandbLogger._offline``): an online logger needs a login, checked
  before any compute (``cli``).
* ``wandb_init_args`` / ``set_wandb_init`` (``WandbLogger._wandb_init``, ``_name``, ``_id``):
  the run's name, id and group are decided after the logger is built but before
  ``wandb.init`` (``callbacks.run_name``).
* ``set_log_dir_name`` (``CSVLogger`` / ``TensorBoardLogger`` ``_name``, ``_version``): their
  ``log_dir`` is ``<save_dir>/<name>/<version>``, made the run folder (``callbacks.run_name``).
* ``CLI_PARSE_CKPT_PATH`` (``LightningCLI._parse_ckpt_path``): the one hook between parsing
  the arguments and Lightning reading a checkpoint's hyperparameters into the model's
  config, where ``cli.LitLoopsCLI`` checks the checkpoint first; checked at import.
"""

from __future__ import annotations

from typing import Any

import lightning
from lightning.pytorch.cli import LightningCLI


def _missing(hook: str, owner: str, attribute: str) -> RuntimeError:
    return RuntimeError(
        f"lit_loops.lightning_internals.{hook} relies on {owner}.{attribute}, a Lightning "
        f"internal that lightning {lightning.__version__} does not have: adapt "
        "lit_loops/lightning_internals.py to this Lightning version, or install the one "
        "pyproject.toml names"
    )


def _require(hook: str, obj: Any, path: str) -> Any:
    """``obj.<path>`` (dotted), or a clear RuntimeError naming the first missing part."""
    value = obj
    for part in path.split("."):
        if not hasattr(value, part):
            raise _missing(hook, type(value).__name__, part)
        value = getattr(value, part)
    return value


def _require_attr(hook: str, obj: Any, *names: str) -> None:
    for name in names:
        if not hasattr(obj, name):
            raise _missing(hook, type(obj).__name__, name)


# --- Trainer: the fit loop's counters and its SIGTERM flag ---------------------------------------


def batches_drawn(trainer: Any) -> int:
    """Training batches completed so far in the run (resumes included), not optimizer steps."""
    return int(
        _require("batches_drawn", trainer, "fit_loop.epoch_loop.batch_progress.total.completed")
    )


def current_batch_index(trainer: Any) -> int:
    """The run-wide index of the training batch in progress (0-based)."""
    return int(_require("current_batch_index", trainer, "fit_loop.epoch_loop.total_batch_idx"))


def signal_connector(trainer: Any) -> Any:
    """Lightning's SIGTERM handler object (``received_sigterm`` stops the fit loop)."""
    connector = _require("signal_connector", trainer, "_signal_connector")
    _require_attr("signal_connector", connector, "received_sigterm")
    return connector


def request_sigterm_stop(trainer: Any) -> None:
    """Stop fit as Lightning does on SIGTERM: after this batch, with ``SIGTERMException``."""
    signal_connector(trainer).received_sigterm = True


# --- WandbLogger: the run before and after wandb.init --------------------------------------------


def wandb_run_or_none(logger: Any) -> Any:
    """The logger's wandb run if it was started already, else None (never starts one)."""
    return _require("wandb_run_or_none", logger, "_experiment")


def wandb_is_offline(logger: Any) -> bool:
    return bool(_require("wandb_is_offline", logger, "_offline"))


def close_wandb_run(logger: Any) -> None:
    """Finish the logger's wandb run, if any, so that the next ``experiment`` starts a new one."""
    run = wandb_run_or_none(logger)
    if run is not None:
        run.finish()
        logger._experiment = None


def wandb_init_args(logger: Any) -> dict[str, Any]:
    """The keyword arguments the logger will pass to ``wandb.init`` (a live dict)."""
    return _require("wandb_init_args", logger, "_wandb_init")


def set_wandb_init(logger: Any, **kwargs: Any) -> None:
    """Set ``wandb.init`` arguments (``name``, ``id``, ``group``, ...) before the run starts;
    the logger's own ``name`` / ``version`` follow ``name`` / ``id``."""
    if wandb_run_or_none(logger) is not None:
        raise RuntimeError("set_wandb_init: the wandb run has started already")
    init = wandb_init_args(logger)
    _require_attr("set_wandb_init", logger, "_name", "_id")
    init.update(kwargs)
    if init.get("anonymous", False) is None:  # wandb warns on an explicit None
        init.pop("anonymous")
    if "name" in kwargs:
        logger._name = kwargs["name"]
    if "id" in kwargs:
        logger._id = kwargs["id"]


# --- CSVLogger / TensorBoardLogger ----------------------------------------------------------------


def set_log_dir_name(logger: Any, name: str, version: str) -> None:
    """Make the logger's ``log_dir`` ``<save_dir>/<name>/<version>`` (before it writes)."""
    _require_attr("set_log_dir_name", logger, "_name", "_version")
    logger._name = name
    logger._version = version


# --- LightningCLI ------------------------------------------------------------------------------------


def require_cli_method(name: str) -> str:
    """``name``, after checking that LightningCLI still has that (private) method to override."""
    if not callable(getattr(LightningCLI, name, None)):
        raise _missing("require_cli_method", "LightningCLI", name)
    return name


# cli.LitLoopsCLI overrides this one (checks the checkpoint before Lightning reads it)
CLI_PARSE_CKPT_PATH = require_cli_method("_parse_ckpt_path")
