import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping
from torch.utils.data import DataLoader

from lit_loops.callbacks import RestoreBestWeights, RunName
from lit_loops.lightning_internals import wandb_init_args


# --- RunName --------------------------------------------------------------------------
class ModelHP(L.LightningModule):
    """Only hyperparameters: what RunName reads of a module."""

    def __init__(self, **hparams):
        super().__init__()
        self.save_hyperparameters(hparams)


class DataHP(L.LightningDataModule):
    def __init__(self, **hparams):
        super().__init__()
        self.save_hyperparameters(hparams)


def test_run_name_matches_the_seed_convention():
    from lit_loops.experiments.oocl import OOCLDataModule, OOCLModule

    data = OOCLDataModule(p=97, holdout1=0.8, holdout2=0.8)
    net = {"d_model": 16, "d_mlp": 16, "n_layers": 1}
    model = OOCLModule(vocab_size=198, seq_len=5, k1=1.0, k2=1.0, k3=1.0, net=net)
    run = RunName("oocl_{op}_{p}_{holdout1}_{holdout2}_{k1}_{k2}_{k3}_L{n_layers}")
    assert run.format(run.template, run.fields(model, data)) == "oocl_ssq_97_0.8_0.8_1.0_1.0_1.0_L1"
    assert run.fields(model, data)["experiment"] == "oocl"


def test_run_name_reads_nested_hyperparameters_by_their_leaf_names_and_paths():
    # hparams as the CLI saves --model.init_args.net.n_layers=1 (nested dicts)
    model = ModelHP(
        loops=12,
        net={"d_model": 64, "n_layers": 1, "loop_window": 4, "loops": 99, "dropout": 0.1},
        optim={"lr": 1e-3, "weight_decay": 0.0, "dropout": 0.0, "betas": [0.9, 0.99]},
    )
    data = DataHP(task="linear_regression", d=20, curriculum={"start": 5})
    run = RunName("icl_{task}_d{d}_looped_L{n_layers}_b{loops}_T{loop_window}")
    fields = run.fields(model, data)
    assert run.format(run.template, fields) == "icl_linear_regression_d20_looped_L1_b12_T4"
    assert fields["loops"] == 12 and fields["net_loops"] == 99  # the top-level name wins
    assert run.format("{net_n_layers}_{optim_lr:.0e}_{start}", fields) == "1_1e-03_5"
    assert fields["betas"] == "0.9-0.99"  # lists in nested groups read as in a folder name
    # a leaf name with two values (net.dropout, optim.dropout) is only there by its paths
    with pytest.raises(ValueError, match="unknown field 'dropout'.*'net_dropout'"):
        run.format("{dropout}", fields)
    assert fields["net_dropout"] == 0.1 and fields["optim_dropout"] == 0.0
    # the SUBLEQ template, with n_layers moved into the model's net
    subleq = RunName("subleq_n{n}_N{N}_L{n_layers}_{loss}")
    model = ModelHP(loss="mse", net={"n_layers": 2, "d_model": 32}, optim={"lr": 3e-4})
    data = DataHP(n=8, N=16, s=4)
    assert subleq.format(subleq.template, subleq.fields(model, data)) == "subleq_n8_N16_L2_mse"


def test_run_name_names_unknown_fields():
    run = RunName("{experiment}_{nope}")
    with pytest.raises(ValueError, match="unknown field 'nope'; available: .*'experiment'"):
        run.format(run.template, {"experiment": "oocl"})


def test_run_name_rejects_a_broken_template():
    with pytest.raises(ValueError, match="template='oocl_{p' is invalid"):
        RunName("oocl_{p")


def test_run_name_gives_the_run_a_folder_and_names_the_loggers(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    data, model = DataHP(p=5), ModelHP(d_model=16)
    run, ckpt = RunName("oocl_{p}"), ModelCheckpoint()
    logger = CSVLogger(tmp_path)
    trainer = L.Trainer(
        logger=logger, callbacks=[run, ckpt], max_steps=1, enable_progress_bar=False
    )
    run.apply(trainer, model, data)
    assert run.run_dir.parent == tmp_path / "oocl_5"
    assert logger.log_dir == str(run.run_dir)
    assert ckpt.dirpath == str(run.run_dir / "checkpoints")


def test_run_name_takes_the_wandb_agents_run_id_and_the_sweeps_group(tmp_path, monkeypatch):
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_RUN_ID", "abc123xy")  # what `wandb agent` sets for its run
    monkeypatch.setenv("WANDB_RUN_GROUP", "my_sweep")
    data, model = DataHP(p=5), ModelHP(d_model=16)
    run = RunName("oocl_{p}")
    logger = WandbLogger(save_dir=str(tmp_path), offline=True)
    trainer = L.Trainer(logger=logger, callbacks=[run], max_steps=1, enable_progress_bar=False)
    run.apply(trainer, model, data)
    assert run.version == "abc123xy" and run.run_dir == tmp_path / "oocl_5" / "abc123xy"
    init = wandb_init_args(logger)
    assert init["id"] == "abc123xy" and init["group"] == "my_sweep" and init["name"] == "oocl_5"


# --- RestoreBestWeights ---------------------------------------------------------------
SCRIPTED_SCORES = [0.2, 0.7, 0.4, 0.6, 0.3]  # best (mode max) at the 2nd validation


class ScriptedModule(L.LightningModule):
    """Trains a linear layer; validation logs a scripted score and records the weights."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.snapshots = {}  # global step -> weights at that validation
        self.n_val = 0

    def training_step(self, batch, batch_idx):
        return self.layer(batch).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        pass

    def on_validation_epoch_end(self):
        if self.trainer.sanity_checking:
            return
        score = SCRIPTED_SCORES[min(self.n_val, len(SCRIPTED_SCORES) - 1)]
        self.n_val += 1
        self.log("val/score", score)
        self.snapshots[self.global_step] = {k: v.clone() for k, v in self.state_dict().items()}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit_scripted(callbacks, max_steps=25):
    torch.manual_seed(0)
    module = ScriptedModule()
    trainer = L.Trainer(
        max_steps=max_steps,
        val_check_interval=5,
        check_val_every_n_epoch=None,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    loader = DataLoader(torch.randn(200, 4), batch_size=4)
    trainer.fit(module, loader, DataLoader(torch.randn(4, 4), batch_size=4))
    return module


def test_restore_best_loads_the_best_steps_weights():
    restore = RestoreBestWeights(monitor="val/score", mode="max")
    module = fit_scripted([restore])
    assert restore.best_step == 10 and restore.best_score == pytest.approx(0.7)
    final = module.state_dict()
    for key, value in module.snapshots[10].items():
        torch.testing.assert_close(final[key], value)
    assert not torch.equal(
        module.snapshots[10]["layer.weight"], module.snapshots[25]["layer.weight"]
    )


def test_restore_best_with_min_delta_and_mode_min():
    restore = RestoreBestWeights(monitor="val/score", mode="min", min_delta=0.05)
    fit_scripted([restore])
    assert restore.best_step == 5  # 0.2 is the lowest score; nothing later beats it by 0.05


def test_restore_best_works_with_early_stopping():
    restore = RestoreBestWeights(monitor="val/score", mode="max")
    stop = EarlyStopping(monitor="val/score", mode="max", patience=2)
    module = fit_scripted([restore, stop], max_steps=200)
    assert module.global_step < 200  # early stopping fired
    for key, value in module.snapshots[10].items():
        torch.testing.assert_close(module.state_dict()[key], value)


def test_restore_best_says_when_the_monitor_is_missing():
    with pytest.raises(KeyError, match="monitor='val/nothing' was not logged"):
        fit_scripted([RestoreBestWeights(monitor="val/nothing")])


def test_restore_best_rejects_bad_arguments():
    with pytest.raises(ValueError, match="mode='best' is invalid"):
        RestoreBestWeights(mode="best")
    with pytest.raises(ValueError, match="min_delta=-1.0 is invalid"):
        RestoreBestWeights(min_delta=-1.0)
