"""Each private Lightning hook of ``lit_loops.lightning_internals`` against the installed
Lightning: the attribute exists, and the function does what its callers need on a real
Trainer, WandbLogger (offline), CSV/TensorBoard logger and LightningCLI."""

from __future__ import annotations

from types import SimpleNamespace

import lightning as L
import pytest
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.demos.boring_classes import BoringDataModule, BoringModel
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lit_loops import lightning_internals as li
from lit_loops.data import trainer_rank_and_step


def trainer(tmp_path, callbacks, **kwargs) -> L.Trainer:
    defaults = dict(
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    return L.Trainer(callbacks=callbacks, **{**defaults, **kwargs})


class Record(Callback):
    def __init__(self, stop_at: int | None = None) -> None:
        self.seen: list[tuple[int, int]] = []
        self.stop_at = stop_at

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seen.append((li.current_batch_index(trainer), li.batches_drawn(trainer)))
        if batch_idx == self.stop_at:
            li.request_sigterm_stop(trainer)


# --- Trainer -----------------------------------------------------------------------------


def test_batches_drawn_and_the_batch_index_count_batches_not_optimizer_steps(tmp_path):
    record = Record()
    t = trainer(tmp_path, [record], max_steps=3, accumulate_grad_batches=2)
    t.fit(BoringModel())
    assert t.global_step == 3
    assert [index for index, _ in record.seen] == [0, 1, 2, 3, 4, 5]
    assert li.batches_drawn(t) == 6  # what a resumed stream skips: batches, not steps
    # what the DataModules read
    assert trainer_rank_and_step(SimpleNamespace(trainer=t)) == (0, 6)


def test_request_sigterm_stop_ends_fit_after_the_batch_as_sigterm_does(tmp_path):
    record = Record(stop_at=1)
    t = trainer(tmp_path, [record], max_steps=10)
    with pytest.raises(SIGTERMException):
        t.fit(BoringModel())
    assert t.received_sigterm and t.global_step == 2
    assert li.signal_connector(t).received_sigterm


def test_a_missing_attribute_names_the_lightning_version_and_the_attribute():
    message = rf"batches_drawn relies on SimpleNamespace\.fit_loop.* lightning {L.__version__} "
    with pytest.raises(RuntimeError, match=message):
        li.batches_drawn(SimpleNamespace())
    loop = SimpleNamespace(epoch_loop=SimpleNamespace())
    with pytest.raises(RuntimeError, match="SimpleNamespace.total_batch_idx"):
        li.current_batch_index(SimpleNamespace(fit_loop=loop))
    with pytest.raises(RuntimeError, match="_signal_connector"):
        li.request_sigterm_stop(SimpleNamespace())
    with pytest.raises(RuntimeError, match="_wandb_init"):
        li.set_wandb_init(SimpleNamespace(_experiment=None), name="x")
    with pytest.raises(RuntimeError, match="LightningCLI._no_such_hook"):
        li.require_cli_method("_no_such_hook")


# --- WandbLogger ---------------------------------------------------------------------------


def test_wandb_hooks_name_start_and_close_an_offline_run(tmp_path):
    logger = WandbLogger(save_dir=str(tmp_path), project="lit-loops-test", offline=True)
    assert li.wandb_is_offline(logger)
    assert li.wandb_run_or_none(logger) is None  # nothing started by asking
    li.set_wandb_init(logger, name="run_a", id="abcd1234", group="g")
    init = li.wandb_init_args(logger)
    assert init["name"] == "run_a" and init["id"] == "abcd1234" and init["group"] == "g"
    assert "anonymous" not in init or init["anonymous"] is not None  # wandb warns on None
    assert logger.version == "abcd1234"  # the id, before the run starts
    run = logger.experiment  # starts the run with those arguments
    assert run.name == "run_a" and run.id == "abcd1234"
    assert li.wandb_run_or_none(logger) is run
    with pytest.raises(RuntimeError, match="started already"):
        li.set_wandb_init(logger, name="too_late")
    li.close_wandb_run(logger)
    assert li.wandb_run_or_none(logger) is None
    li.close_wandb_run(logger)  # closing twice is fine
    assert not li.wandb_is_offline(WandbLogger(save_dir=str(tmp_path), offline=False))


# --- CSVLogger / TensorBoardLogger ---------------------------------------------------------


@pytest.mark.parametrize("logger_class", [CSVLogger, TensorBoardLogger])
def test_set_log_dir_name_makes_the_log_dir_the_run_folder(tmp_path, logger_class):
    logger = logger_class(save_dir=str(tmp_path))
    li.set_log_dir_name(logger, "run_a", "20250101-000000-abcd")
    assert logger.name == "run_a" and logger.version == "20250101-000000-abcd"
    assert logger.log_dir == str(tmp_path / "run_a" / "20250101-000000-abcd")


# --- LightningCLI ----------------------------------------------------------------------------


def test_lightning_cli_still_calls_parse_ckpt_path_before_building_the_model():
    order = []

    class Recording(LightningCLI):
        def _parse_ckpt_path(self) -> None:
            order.append("parse_ckpt_path")
            super()._parse_ckpt_path()

        def instantiate_classes(self) -> None:
            order.append("instantiate_classes")
            super().instantiate_classes()

    assert li.CLI_PARSE_CKPT_PATH == "_parse_ckpt_path"
    Recording(BoringModel, BoringDataModule, run=False, args=[])
    assert order == ["parse_ckpt_path", "instantiate_classes"]


def test_lit_loops_cli_checks_the_checkpoint_in_that_hook(in_tmp):
    from lit_loops.cli import LitLoopsCLI

    assert li.CLI_PARSE_CKPT_PATH in vars(LitLoopsCLI)
    args = [
        "validate",
        "--model=lightning.pytorch.demos.boring_classes.BoringModel",
        "--data=lightning.pytorch.demos.boring_classes.BoringDataModule",
        "--ckpt_path=missing.ckpt",
    ]
    with pytest.raises(ValueError, match="ckpt_path='missing.ckpt' is invalid: no such file"):
        LitLoopsCLI(args=args)
