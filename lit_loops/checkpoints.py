"""Loading a run back from its checkpoint, with one clear error when the file does not fit.

``load_run(ckpt)`` gives ``(module, datamodule)`` of a checkpoint the ``lit-loops`` CLI
saved: the classes and their arguments are those saved in the checkpoint (``LightningCLI``
stores ``_class_path`` next to the hyperparameters of the model and of the DataModule), so
nothing about the run needs repeating. The CLI's ``--ckpt_path`` checks are here too
(``load_checkpoint_checked``, ``check_checkpoint_fits``): a missing, truncated or foreign
file fails with a message naming it instead of an error from deep inside ``torch.load`` or
a model quietly built from another experiment's hyperparameters.
"""

from __future__ import annotations

import importlib
import inspect
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch

LIGHTNING_CKPT_ALIASES = ("last", "best", "hpc", "registry")  # what Trainer resolves itself


def import_object(class_path: str) -> Any:
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def load_checkpoint_checked(
    ckpt_path: str | os.PathLike | None,
    model_class_path: str | None = None,
    *,
    name: str = "ckpt_path",
) -> dict | None:
    """The checkpoint (a dict, on the CPU) behind ``ckpt_path``, or one clear ``ValueError``
    if it is missing, unreadable, not a Lightning checkpoint, or saved by another model
    class than ``model_class_path`` (when both are known). ``None`` for no path and for
    Lightning's own aliases (``last``, ``best``, ...). ``name`` is the argument named in
    the messages."""
    if ckpt_path is None or ckpt_path in LIGHTNING_CKPT_ALIASES:
        return None
    where = f"{name}={str(ckpt_path)!r} is invalid"
    if not os.path.isfile(ckpt_path):
        raise ValueError(f"{where}: no such file")
    try:
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, not a torch file, ...
        first_line = (str(err).splitlines() or [""])[0][:200]
        raise ValueError(
            f"{where}: not a readable checkpoint ({type(err).__name__}: {first_line})"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{where}: not a Lightning checkpoint")
    saved_class = saved_class_path(checkpoint)
    if saved_class and model_class_path and saved_class != model_class_path:
        raise ValueError(
            f"{where}: it was saved by {saved_class}, this run's model is {model_class_path}"
        )
    return checkpoint


def saved_class_path(checkpoint: dict, key: str = "hyper_parameters") -> str | None:
    """The class path the CLI saved with the model's (or, with ``key=
    "datamodule_hyper_parameters"``, the DataModule's) hyperparameters; None if none."""
    return (checkpoint.get(key) or {}).get("_class_path")


def check_checkpoint_fits(
    ckpt_path: str | os.PathLike,
    checkpoint: dict,
    model: L.LightningModule,
    *,
    name: str = "ckpt_path",
) -> None:
    """The checkpoint's weights have this model's names and shapes (else a ``ValueError``)."""
    where = f"{name}={str(ckpt_path)!r} is invalid"
    saved, wanted = set(checkpoint["state_dict"]), set(model.state_dict())
    if saved != wanted:
        raise ValueError(
            f"{where}: its weights do not fit this model "
            f"(missing {sorted(wanted - saved)[:3]}, unexpected {sorted(saved - wanted)[:3]})"
        )
    for key, tensor in model.state_dict().items():
        shape = tuple(checkpoint["state_dict"][key].shape)
        if shape != tuple(tensor.shape):
            raise ValueError(
                f"{where}: {key} has shape {shape} there, "
                f"{tuple(tensor.shape)} in this model (data-decided sizes differ?)"
            )


def _class_of(
    checkpoint: dict, key: str, expected: type | None, where: str, what: str
) -> type | None:
    """The class saved under ``checkpoint[key]["_class_path"]`` (a subclass of ``expected``
    when given), else ``expected``."""
    class_path = saved_class_path(checkpoint, key)
    if class_path is None:
        return expected
    try:
        cls = import_object(class_path)
    except (ImportError, AttributeError) as err:
        raise ValueError(
            f"{where}: its {what} class {class_path} cannot be imported ({err})"
        ) from None
    if expected is not None and not (isinstance(cls, type) and issubclass(cls, expected)):
        raise ValueError(
            f"{where}: it was saved by {class_path}, not by a {expected.__module__}."
            f"{expected.__qualname__}"
        )
    return cls


def _from_checkpoint(cls: type, ckpt_path: str | os.PathLike, map_location: Any) -> Any:
    # the file loaded with weights_only=True already (load_checkpoint_checked): say so, which
    # also keeps Lightning from warning that it defaults to False (no such argument before 2.5)
    kwargs = {"map_location": map_location}
    if "weights_only" in inspect.signature(cls.load_from_checkpoint).parameters:
        kwargs["weights_only"] = True
    return cls.load_from_checkpoint(ckpt_path, **kwargs)


def load_run(
    ckpt_path: str | os.PathLike,
    map_location: Any = "cpu",
    *,
    model_class: type[L.LightningModule] | None = None,
    data_class: type[L.LightningDataModule] | None = None,
    name: str = "ckpt_path",
) -> tuple[L.LightningModule, L.LightningDataModule | None]:
    """``(module, datamodule)`` rebuilt from a checkpoint: the module with its weights (in
    train mode, as ``load_from_checkpoint`` gives it; call ``.eval()`` for inference), the
    DataModule from the DataModule hyperparameters saved in the checkpoint (``None`` when
    the checkpoint has none, e.g. a run without a DataModule).

    Both classes come from the checkpoint (``_class_path``, saved by the CLI).
    ``model_class`` / ``data_class``, when given, are what the saved classes must be
    subclasses of, and what is built for a checkpoint that names no class (one saved
    outside the CLI). Every failure is a ``ValueError`` naming ``name=<ckpt_path>``: no
    such file, not a readable Lightning checkpoint, another experiment's, or weights that
    do not fit the model the saved hyperparameters build.
    """
    where = f"{name}={str(ckpt_path)!r} is invalid"
    checkpoint = load_checkpoint_checked(Path(ckpt_path), name=name)
    module_cls = _class_of(checkpoint, "hyper_parameters", model_class, where, "model")
    if module_cls is None:
        raise ValueError(
            f"{where}: it does not say which model saved it (no hyper_parameters._class_path: "
            "not saved by the lit-loops CLI?); pass model_class"
        )
    try:
        module = _from_checkpoint(module_cls, ckpt_path, map_location)
    except RuntimeError as err:  # load_state_dict: missing / unexpected keys, shapes
        if "state_dict" not in str(err):
            raise
        detail = " ".join(str(err).split())[:300]
        raise ValueError(
            f"{where}: its weights do not fit the {module_cls.__name__} its saved "
            f"hyperparameters build ({detail})"
        ) from None
    except TypeError as err:  # the class no longer takes the saved arguments
        raise ValueError(
            f"{where}: {module_cls.__name__} does not take the hyperparameters saved in it ({err})"
        ) from None
    data_cls = _class_of(checkpoint, "datamodule_hyper_parameters", data_class, where, "DataModule")
    datamodule = None
    if data_cls is not None and "datamodule_hyper_parameters" in checkpoint:
        try:
            datamodule = _from_checkpoint(data_cls, ckpt_path, map_location)
        except TypeError as err:
            raise ValueError(
                f"{where}: {data_cls.__name__} does not take the hyperparameters saved in it "
                f"({err})"
            ) from None
    return module, datamodule
