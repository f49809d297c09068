"""Reliability: exact resume, interruption, non-finite losses, bad checkpoints, no network, disk.

Each experiment's CPU config, shortened (and shrunk where a full-size step would take
seconds), is run three ways through the real CLI: uninterrupted; interrupted by SIGTERM
mid-run (which must leave ``interrupted.ckpt``); and resumed from that checkpoint. The
resumed run must end with the same weights, bit for bit, and log the same metrics as the
uninterrupted one: the on-the-fly data streams, the curricula, the best-weights tracker
and early stopping are all part of the checkpoint.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import CONFIGS, TINY_OOCL, cli
from lit_loops.callbacks.nonfinite import NonFiniteLossError

COMMON = [
    "--config", CONFIGS / "presets" / "csv_logger.yaml",
    "--trainer.max_steps=6",
    "--trainer.val_check_interval=2",
    "--trainer.log_every_n_steps=1",
    "--trainer.deterministic=true",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]  # fmt: skip

# Each experiment's CPU config, shrunk so that six steps take seconds.
EXPERIMENTS = {
    "oocl": TINY_OOCL,
    "subleq": [
        "--config", CONFIGS / "subleq" / "cpu.yaml",
        "--model.init_args.net.d_model=32", "--model.init_args.net.n_layers=2",
        "--model.init_args.net.d_mlp=64", "--data.init_args.batch_size=16",
        "--trainer.limit_val_batches=1",
    ],
    "icl": [  # the looped model: random extra loops per step and the curricula
        "--config", CONFIGS / "icl" / "cpu.yaml", "--config", CONFIGS / "icl" / "cpu_looped.yaml",
        "--model.init_args.net.d_model=32", "--data.init_args.batch_size=16",
        "--data.init_args.curriculum_every=2", "--trainer.limit_val_batches=1",
    ],
    "sequences": [  # the phase curriculum moves within the six steps
        "--config", CONFIGS / "sequences" / "cpu.yaml",
        "--model.init_args.net.d_model=32", "--model.init_args.net.n_layers=2",
        "--model.init_args.net.d_mlp=64", "--data.init_args.batch_size=16",
        "--data.init_args.phase_steps=[2,4]", "--data.init_args.transition_steps=2",
        "--data.init_args.val_per_family=4", "--model.init_args.optim.warmup_steps=2",
    ],
    "block_recurrent": [  # accumulation (2 batches a step): the stop waits for the step's end
        "--config", CONFIGS / "block_recurrent" / "recall_cpu.yaml",
        "--model.init_args.net.dim=32", "--model.init_args.net.dim_head=16",
        "--model.init_args.accumulate_grad_batches=2", "--data.init_args.batch_size=8",
        "--data.init_args.val_batches=1", "--data.init_args.val_batch_size=16",
    ],
}  # fmt: skip
# after COMMON: block_recurrent validates every 2 steps (4 batches), so the stop at step 3
# does not fall on a validation (a stop there waits one more step)
AFTER = {"block_recurrent": ["--trainer.val_check_interval=4"]}


def metrics_of(run_dir: Path) -> dict[tuple[int, str], float]:
    """{(step, metric): value} from a run's metrics.csv."""
    out = {}
    with open(run_dir / "metrics.csv") as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if key not in ("step", "epoch") and value != "":
                    out[(int(row["step"]), key)] = float(value)
    return out


def only_run_dir(root: Path, exclude=()) -> Path:
    dirs = [p for p in root.glob("*/*") if p.is_dir() and p not in exclude and p.name != "wandb"]
    assert len(dirs) == 1, dirs
    return dirs[0]


def interrupt(args, batch: int, signum=signal.SIGTERM) -> int:
    """Runs ``fit`` and sends ``signum`` after training batch ``batch``; returns the exit status."""
    cb = f'{{"class_path": "conftest.SignalAtBatch", "init_args": {{"batch": {batch}, "signum": {int(signum)}}}}}'
    with pytest.raises(SystemExit) as stop:
        cli("fit", *args, f"--trainer.callbacks+={cb}")
    return getattr(stop.value, "signum", None)


@pytest.mark.parametrize("experiment", list(EXPERIMENTS))
def test_a_run_interrupted_and_resumed_ends_as_an_uninterrupted_one(
    tmp_path, monkeypatch, experiment
):
    args = [*EXPERIMENTS[experiment], *COMMON, *AFTER.get(experiment, [])]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "full").mkdir()
    (tmp_path / "split").mkdir()

    monkeypatch.chdir(tmp_path / "full")
    full = cli("fit", *args)
    full_metrics = metrics_of(only_run_dir(tmp_path / "full" / "runs"))

    monkeypatch.chdir(tmp_path / "split")
    # block_recurrent steps every 2 batches: batch 4 is mid-step, the stop comes after batch 5
    assert interrupt(args, batch=4 if experiment == "block_recurrent" else 2) == signal.SIGTERM
    first = only_run_dir(tmp_path / "split" / "runs")
    ckpt = first / "checkpoints" / "interrupted.ckpt"
    assert ckpt.exists()
    assert torch.load(ckpt, weights_only=False)["global_step"] == 3
    resumed = cli("fit", *args, "--ckpt_path", ckpt)
    assert resumed.trainer.global_step == 6
    second = only_run_dir(tmp_path / "split" / "runs", exclude=[first])

    for name, weight in full.model.state_dict().items():
        assert torch.equal(weight, resumed.model.state_dict()[name]), name
    split_metrics = {**metrics_of(first), **metrics_of(second)}
    assert set(split_metrics) == set(full_metrics)
    for key, value in full_metrics.items():
        assert split_metrics[key] == pytest.approx(value, rel=1e-6, abs=1e-7), key


def test_ctrl_c_takes_the_same_path_as_sigterm(in_tmp):
    args = [*TINY_OOCL, *COMMON]
    assert interrupt(args, batch=0, signum=signal.SIGINT) == signal.SIGINT
    ckpt = next(in_tmp.glob("runs/*/*/checkpoints/interrupted.ckpt"))
    assert torch.load(ckpt, weights_only=False)["global_step"] == 1


def test_a_stop_due_on_a_validation_step_comes_one_step_later(in_tmp):
    args = [*TINY_OOCL, *COMMON]  # validation after steps 2, 4, 6
    assert interrupt(args, batch=1) == signal.SIGTERM
    ckpt = next(in_tmp.glob("runs/*/*/checkpoints/interrupted.ckpt"))
    assert torch.load(ckpt, weights_only=False)["global_step"] == 3


def test_sigterm_through_the_console_script_exits_143_and_prints_how_to_resume(in_tmp):
    exe = Path(sys.executable).parent / "lit-loops"
    proc = subprocess.Popen(
        [exe, "fit", *map(str, TINY_OOCL), *map(str, COMMON), "--trainer.max_steps=100000",
         "--trainer.val_check_interval=1000"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=in_tmp,
    )  # fmt: skip
    for line in proc.stdout:  # wait until training runs
        if "Run:" in line:
            break
    import time

    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 128 + signal.SIGTERM, out[-2000:]
    assert "SIGTERM received" in out and "Resume with: lit-loops fit --config" in out
    assert len(list(in_tmp.glob("runs/*/*/checkpoints/interrupted.ckpt"))) == 1


def test_a_second_sigterm_exits_at_once(in_tmp):
    script = (
        "import os, signal, sys\n"
        "from lit_loops.callbacks.interrupt import CheckpointOnInterrupt\n"
        "cb = CheckpointOnInterrupt()\n"
        "cb._previous = {}\n"
        "signal.signal(signal.SIGTERM, cb._handle)\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"  # the first: noted, the run would go on
        "print('still running', flush=True)\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"  # the second: out at once
        "print('not reached', flush=True)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert "still running" in out.stdout and "not reached" not in out.stdout
    assert out.returncode == 128 + signal.SIGTERM


# --- non-finite losses ------------------------------------------------------------------------


def nan_at(step: int, times: int = 1) -> str:
    return (
        '--trainer.callbacks+={"class_path": "conftest.NaNAtStep", '
        f'"init_args": {{"step": {step}, "times": {times}}}}}'
    )


@pytest.mark.parametrize("experiment", ["oocl", "block_recurrent"])  # automatic and manual
def test_a_nan_loss_stops_with_the_step_the_parts_and_a_checkpoint(in_tmp, experiment):
    with pytest.raises(NonFiniteLossError) as err:
        cli("fit", *EXPERIMENTS[experiment], *COMMON, nan_at(3))
    message = str(err.value)
    assert "the training loss is nan at step 3" in message
    assert "train/loss" in message and "nonfinite-step000003.ckpt" in message
    ckpt = next(in_tmp.glob("runs/*/*/checkpoints/nonfinite-step000003.ckpt"))
    state = torch.load(ckpt, weights_only=False)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values())  # the last good state


def test_skip_drops_the_bad_batch_and_trains_on(in_tmp):
    skip = '--trainer.callbacks+={"class_path": "lit_loops.callbacks.NonFiniteLossGuard", "init_args": {"action": "skip"}}'
    run = cli("fit", *TINY_OOCL, *COMMON, skip, nan_at(3, times=2))
    assert run.trainer.global_step == 6
    assert all(torch.isfinite(p).all() for p in run.model.parameters())
    assert float(run.trainer.callback_metrics["train/skipped"]) == 2
    assert torch.isfinite(run.trainer.callback_metrics["val/loss_table1"])


def test_skip_gives_up_after_max_skips_in_a_row(in_tmp):
    skip = '--trainer.callbacks+={"class_path": "lit_loops.callbacks.NonFiniteLossGuard", "init_args": {"action": "skip", "max_skips": 2}}'
    with pytest.raises(NonFiniteLossError, match="at step 4"):
        cli("fit", *TINY_OOCL, *COMMON, skip, nan_at(3, times=5))


def test_the_console_script_reports_a_nan_without_a_traceback(in_tmp):
    exe = Path(sys.executable).parent / "lit-loops"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}  # conftest.NaNAtStep
    out = subprocess.run(
        [exe, "fit", *map(str, TINY_OOCL), *map(str, COMMON), nan_at(2)],
        capture_output=True, text=True, cwd=in_tmp, timeout=300, env=env,
    )  # fmt: skip
    assert out.returncode == 1
    assert "lit-loops: error: the training loss is nan at step 2" in out.stderr
    assert "Traceback" not in out.stderr


# --- checkpoints that do not fit ----------------------------------------------------------------


def test_a_checkpoint_from_another_experiment_or_a_corrupt_one_fails_before_training(in_tmp):
    run = cli("fit", *EXPERIMENTS["oocl"], *COMMON, "--trainer.max_steps=2")
    oocl_ckpt = next(in_tmp.glob("runs/*/*/checkpoints/last.ckpt"))
    with pytest.raises(ValueError, match="it was saved by lit_loops.experiments.oocl"):
        cli("fit", *EXPERIMENTS["subleq"], *COMMON, "--ckpt_path", oocl_ckpt)
    # the data decides sizes: a checkpoint's model cannot be forced onto other data
    with pytest.raises(ValueError, match="vocab_size=26 is invalid: the data decides it"):
        cli("fit", *TINY_OOCL, *COMMON, "--data.init_args.p=13", "--ckpt_path", oocl_ckpt)
    # a checkpoint without hyperparameters (saved elsewhere): its shapes are checked
    bare = torch.load(oocl_ckpt, weights_only=True)
    del bare["hyper_parameters"]
    torch.save(bare, in_tmp / "bare.ckpt")
    with pytest.raises(ValueError, match="has shape \\(26, 32\\) there, \\(26, 64\\) in this"):
        cli("fit", *TINY_OOCL, *COMMON, "--model.init_args.net.d_model=64", "--ckpt_path",
            in_tmp / "bare.ckpt")  # fmt: skip
    corrupt = in_tmp / "corrupt.ckpt"
    corrupt.write_bytes(oocl_ckpt.read_bytes()[:1000])  # a copy cut short
    with pytest.raises(ValueError, match="ckpt_path=.*corrupt.ckpt.* is invalid: not a readable"):
        cli("fit", *TINY_OOCL, *COMMON, "--ckpt_path", corrupt)
    with pytest.raises(ValueError, match="is invalid: no such file"):
        cli("validate", *TINY_OOCL, *COMMON, "--ckpt_path", in_tmp / "nope.ckpt")
    assert run.trainer.global_step == 2


# --- network, accounts, disk ---------------------------------------------------------------------


def test_wandb_online_without_a_login_fails_at_once_with_a_clear_message(in_tmp):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_MODE="online", HOME=str(in_tmp), NETRC=str(in_tmp / "no-netrc"))
    exe = Path(sys.executable).parent / "lit-loops"
    out = subprocess.run(
        [exe, "fit", *map(str, TINY_OOCL), "--trainer.max_steps=2"],
        capture_output=True, text=True, cwd=in_tmp, env=env, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr[-2000:]
    assert "WANDB_MODE=online" in out.stderr and "wandb login" in out.stderr
    assert not list(in_tmp.glob("runs/*/*/checkpoints"))  # before any compute


def test_a_run_writes_only_in_its_run_folder_and_keeps_few_checkpoints(in_tmp):
    before = set(Path(in_tmp).rglob("*"))
    cli("fit", *TINY_OOCL, "--trainer.max_steps=12", "--trainer.val_check_interval=2")
    new = set(Path(in_tmp).rglob("*")) - before
    assert new and all(p.relative_to(in_tmp).parts[0] == "runs" for p in new)
    ckpts = list(in_tmp.glob("runs/oocl_*/*/checkpoints/*.ckpt"))
    assert len(ckpts) == 2  # the best (save_top_k=1) and last.ckpt, out of 6 validations
    report = json.dumps(sorted(str(p.relative_to(in_tmp)) for p in new))
    assert "wandb" in report  # the offline wandb run is under runs/ too


# --- distinct data on every rank and worker ------------------------------------------------------


class FakeTrainer:
    """What a DataModule reads from its trainer: the global rank and the batches drawn."""

    def __init__(self, rank: int, batches_done: int = 0):
        from types import SimpleNamespace

        self.global_rank = rank
        self.global_step = batches_done
        progress = SimpleNamespace(total=SimpleNamespace(completed=batches_done))
        self.fit_loop = SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress))


def flat(batch) -> torch.Tensor:
    """All the tensors of a (nested) batch as one float vector."""
    if isinstance(batch, torch.Tensor):
        return batch.detach().flatten().float()
    if isinstance(batch, dict):
        return torch.cat([flat(batch[k]) for k in sorted(batch)])
    if isinstance(batch, (int, float)):
        return torch.tensor([float(batch)])
    return torch.cat([flat(b) for b in batch])


def draw(datamodule, rank: int, workers: int, n: int = 4) -> list[torch.Tensor]:
    datamodule.trainer = FakeTrainer(rank)
    datamodule.hparams.num_workers = workers
    iterator = iter(datamodule.train_dataloader())
    return [flat(next(iterator)) for _ in range(n)]


@pytest.mark.parametrize("experiment", list(EXPERIMENTS))
def test_ranks_and_workers_draw_distinct_streams_and_share_validation(in_tmp, experiment):
    from lit_loops.cli import LitLoopsCLI

    built = LitLoopsCLI(args=[str(a) for a in EXPERIMENTS[experiment]], run=False)
    datamodule = built.datamodule
    datamodule.setup("fit")
    rank0, rank1 = draw(datamodule, 0, workers=0), draw(datamodule, 1, workers=0)
    two_workers = draw(datamodule, 0, workers=2)
    batches = rank0 + rank1
    # no batch is drawn twice, within a rank or across ranks
    for i, a in enumerate(batches):
        for b in batches[i + 1 :]:
            assert a.shape != b.shape or not torch.equal(a, b)
    # two workers interleave one stream: the same batches, none repeated
    for a, b in zip(rank0, two_workers, strict=True):
        assert torch.equal(a, b)

    def val_batches(rank):
        datamodule.trainer = FakeTrainer(rank)
        loaders = datamodule.val_dataloader()
        loaders = loaders if isinstance(loaders, list) else [loaders]
        return [flat(b) for loader in loaders for b in loader]

    for a, b in zip(val_batches(0), val_batches(1), strict=True):
        assert torch.equal(a, b)  # every rank validates on the same set


# --- DDP: two processes on CPU (gloo) ----------------------------------------------------------

BATCH = {"oocl": 32, "subleq": 16, "icl": 16, "sequences": 16, "block_recurrent": 8}


def fit_in_subprocess(folder: Path, args: list, *extra: str) -> dict[tuple[int, str], float]:
    folder.mkdir()
    exe = Path(sys.executable).parent / "lit-loops"
    out = subprocess.run(
        [exe, "fit", *map(str, args), *extra],
        capture_output=True, text=True, cwd=folder, timeout=900,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return metrics_of(only_run_dir(folder / "runs"))


@pytest.mark.slow
@pytest.mark.parametrize("experiment", list(EXPERIMENTS))
def test_two_process_ddp_agrees_with_one_process_on_the_same_global_batch(in_tmp, experiment):
    """Each rank draws its own half of the global batch, so the runs see different samples:
    their validation losses agree within sampling noise, not bit for bit."""
    args = [*EXPERIMENTS[experiment], *COMMON, *AFTER.get(experiment, []),
            "--trainer.max_steps=30", "--trainer.val_check_interval=30"]  # fmt: skip
    if experiment == "block_recurrent":  # 60 batches: validation at the end
        args += ["--trainer.val_check_interval=60"]
    B = BATCH[experiment]
    one = fit_in_subprocess(in_tmp / "one", args, f"--data.init_args.batch_size={B}")
    two = fit_in_subprocess(
        in_tmp / "two", args, f"--data.init_args.batch_size={B // 2}",
        "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu",
    )  # fmt: skip
    last = max(step for step, key in one if key.startswith("val/"))
    losses = [  # ICL's validation error is its normalised squared error (nse)
        key for step, key in one
        if step == last and key.startswith("val/") and ("loss" in key or "nse" in key)
    ]  # fmt: skip
    assert losses and all((last, key) in two for key in losses)
    for key in losses:
        assert two[(last, key)] == pytest.approx(one[(last, key)], rel=0.2), key
    assert one[(last, losses[0])] != two[(last, losses[0])]  # really two different runs
