"""The real CLI end to end: config printing, linking, run folders, validate from a checkpoint."""

import csv
import dataclasses
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from torch.utils.data import DataLoader

from conftest import CONFIGS, TINY_OOCL, cli


def test_print_config_prints_the_whole_resolved_config(in_tmp):
    exe = Path(sys.executable).parent / "lit-loops"
    out = subprocess.run(
        [exe, "fit", "--config", CONFIGS / "oocl" / "cpu.yaml", "--print_config"],
        capture_output=True, text=True, check=True, cwd=in_tmp,
    ).stdout  # fmt: skip
    config = yaml.safe_load(out)
    assert config["model"]["class_path"] == "lit_loops.experiments.oocl.OOCLModule"
    assert config["data"]["init_args"]["p"] == 31
    assert config["trainer"]["logger"]["class_path"] == "lightning.pytorch.loggers.WandbLogger"
    assert config["trainer"]["logger"]["init_args"]["offline"] is True
    assert "max_steps" in config["trainer"] and "lr" in config["model"]["init_args"]["optim"]


def test_configs_stack_and_the_command_line_overrides(in_tmp):
    run = cli(
        "fit", *TINY_OOCL, "--config", CONFIGS / "oocl" / "k100.yaml",
        "--data.init_args.holdout1=0.5", "--trainer.fast_dev_run=true",
    )  # fmt: skip
    assert (run.model.hparams.k1, run.model.hparams.k2, run.model.hparams.k3) == (1.0, 0.0, 0.0)
    assert run.datamodule.hparams.holdout1 == 0.5


def test_data_decides_vocab_size_and_seq_len(in_tmp):
    run = cli("fit", *TINY_OOCL, "--trainer.fast_dev_run=true")
    assert run.model.hparams.vocab_size == 2 * 11 + 4
    assert run.model.hparams.seq_len == 5


def test_a_hand_set_vocab_size_that_disagrees_with_the_data_is_an_error(in_tmp):
    with pytest.raises(
        ValueError, match=r"model.init_args.vocab_size=99 is invalid: the data decides it"
    ):
        cli("fit", *TINY_OOCL, "--model.init_args.vocab_size=99", "--trainer.fast_dev_run=true")


def test_same_config_twice_in_one_folder_with_the_default_wandb_logger(in_tmp):
    args = ["fit", *TINY_OOCL, "--trainer.max_steps=2", "--trainer.val_check_interval=2"]
    first, second = cli(*args), cli(*args)
    name = "oocl_ssq_11_0.9_0.2_1.0_1.0_1.0"
    dirs = [find_run(first), find_run(second)]
    assert dirs[0] != dirs[1] and all(d.resolve().parent == in_tmp / "runs" / name for d in dirs)
    for d in dirs:
        saved = yaml.safe_load((d / "config.yaml").read_text())
        assert saved["data"]["init_args"]["p"] == 11
        assert any(d.glob("checkpoints/*.ckpt"))
    wandb_runs = list((in_tmp / "runs" / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 2  # offline, under runs/, one per fit


def find_run(run):
    from lit_loops.callbacks import find_run_name

    return find_run_name(run.trainer).run_dir


def read_metrics(path):
    with open(path) as f:
        return [row for row in csv.DictReader(f)]


def test_validate_with_the_best_checkpoint_reproduces_fit_metrics(in_tmp):
    common = [*TINY_OOCL, "--config", CONFIGS / "presets" / "csv_logger.yaml"]
    fit = cli("fit", *common, "--trainer.max_steps=30", "--trainer.val_check_interval=10")
    ckpt = fit.trainer.checkpoint_callback
    best_step = int(Path(ckpt.best_model_path).name[4:10])
    rows = read_metrics(find_run(fit) / "metrics.csv")
    logged = next(r for r in rows if r["val/acc_table1"] and int(r["step"]) == best_step - 1)
    validate = cli("validate", *common, "--ckpt_path", ckpt.best_model_path)
    got = validate.trainer.callback_metrics
    for key in ("val/acc_table1", "val/acc_table2", "val/loss_table1", "val/loss_table2"):
        assert float(got[key]) == pytest.approx(float(logged[key]), rel=1e-5), key


@pytest.mark.parametrize("preset", ["csv_logger.yaml", "tensorboard_logger.yaml"])
def test_logger_presets_write_into_the_run_folder(in_tmp, preset):
    run = cli(
        "fit", *TINY_OOCL, "--config", CONFIGS / "presets" / preset,
        "--trainer.max_steps=2", "--trainer.val_check_interval=2",
    )  # fmt: skip
    folder = find_run(run)
    files = {p.name for p in folder.iterdir()}
    assert "config.yaml" in files and "checkpoints" in files
    assert (
        ("metrics.csv" in files)
        if preset == "csv_logger.yaml"
        else any(f.startswith("events.out") for f in files)
    )


@pytest.mark.parametrize("subcommand", ["test", "predict"])
def test_test_and_predict_subcommands_run(in_tmp, subcommand):
    run = cli(subcommand, *TINY_OOCL, "--trainer.fast_dev_run=true")
    if subcommand == "test":
        assert "test/acc_table1" in run.trainer.callback_metrics
    else:
        preds = run.trainer.predict_loop.predictions
        assert (
            preds
            and preds[0][0]["table1"]["pred"].shape == preds[0][0]["table1"]["tokens"].shape[:1]
        )


@pytest.mark.slow
def test_two_process_ddp_on_cpu_shares_one_run_folder(in_tmp):
    """DDP (gloo, 2 processes) through the console script: one run, one folder, one config."""
    exe = Path(sys.executable).parent / "lit-loops"
    out = subprocess.run(
        [exe, "fit", *TINY_OOCL, "--config", CONFIGS / "presets" / "csv_logger.yaml",
         "--trainer.max_steps=20", "--trainer.val_check_interval=10",
         "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu"],
        capture_output=True, text=True, cwd=in_tmp, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Steps:     20" in out.stdout
    runs = list((in_tmp / "runs").glob("oocl_*/*"))
    assert len(runs) == 1 and (runs[0] / "config.yaml").exists()
    assert any(runs[0].glob("checkpoints/*.ckpt"))


# --- load_run: a run back from its checkpoint (independent of the experiments' modules) ---------


@dataclasses.dataclass
class TinyNet:
    depth: int = 1


class TinyModule(L.LightningModule):
    def __init__(self, width: int = 3, net: TinyNet | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = net or TinyNet()
        self.layer = torch.nn.Linear(width, self.net.depth)

    def training_step(self, batch, batch_idx):
        return self.layer(batch).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class OtherModule(TinyModule):
    pass


class TinyData(L.LightningDataModule):
    def __init__(self, width: int = 3, n: int = 8) -> None:
        super().__init__()
        self.save_hyperparameters()

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        return DataLoader(
            torch.randn(self.hparams.n, self.hparams.width, generator=g), batch_size=4
        )


def tiny_run(*extra: str):
    return cli(
        "fit", f"--model={__name__}.TinyModule", f"--data={__name__}.TinyData",
        "--model.init_args.width=5", "--model.init_args.net.depth=2", "--data.init_args.width=5",
        "--trainer.max_steps=2", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false", *extra,
    )  # fmt: skip


def test_load_run_rebuilds_the_module_and_the_data_a_cli_run_saved(in_tmp):
    from lit_loops.checkpoints import load_run

    naming = ["--trainer.callbacks+=lit_loops.callbacks.RunName",
              "--trainer.callbacks.template=tiny_L{depth}_{net_depth}_w{width}"]  # fmt: skip
    run = tiny_run(*naming)
    assert find_run(run).parent.name == "tiny_L2_2_w5"  # a nested hyperparameter names the run
    ckpt = run.trainer.checkpoint_callback.best_model_path
    module, data = load_run(ckpt)
    assert type(module) is TinyModule and module.net == TinyNet(depth=2)  # nested args rebuilt
    assert type(data) is TinyData and (data.hparams.width, data.hparams.n) == (5, 8)
    for key, tensor in run.model.state_dict().items():
        assert torch.equal(module.state_dict()[key], tensor.cpu()), key
    # the classes it must be: the same run, or a clear error for another class
    assert isinstance(
        load_run(ckpt, model_class=L.LightningModule, data_class=TinyData)[0], TinyModule
    )
    with pytest.raises(
        ValueError, match=r"is invalid: it was saved by test_cli.TinyModule, not by"
    ):
        load_run(ckpt, model_class=OtherModule)


def test_load_run_fails_with_one_clear_line(in_tmp):
    from lit_loops.checkpoints import load_run

    ckpt = Path(tiny_run().trainer.checkpoint_callback.best_model_path)
    with pytest.raises(ValueError, match=r"ckpt_path='nope.ckpt' is invalid: no such file"):
        load_run("nope.ckpt")
    corrupt = in_tmp / "corrupt.ckpt"
    corrupt.write_bytes(ckpt.read_bytes()[:500])
    with pytest.raises(ValueError, match=r"checkpoint=.*corrupt.ckpt.* is invalid: not a readable"):
        load_run(corrupt, name="checkpoint")
    # a checkpoint that names no classes, and no DataModule: the caller says what to build
    bare = torch.load(ckpt, weights_only=True)
    del bare["hyper_parameters"]["_class_path"], bare["datamodule_hyper_parameters"]
    torch.save(bare, in_tmp / "bare.ckpt")
    with pytest.raises(ValueError, match="does not say which model saved it"):
        load_run(in_tmp / "bare.ckpt")
    module, data = load_run(in_tmp / "bare.ckpt", model_class=TinyModule)
    assert module.layer.in_features == 5 and data is None
    # hyperparameters that no longer build the saved weights
    bare["hyper_parameters"]["width"] = 7
    torch.save(bare, in_tmp / "changed.ckpt")
    with pytest.raises(ValueError, match="its weights do not fit the TinyModule"):
        load_run(in_tmp / "changed.ckpt", model_class=TinyModule)
