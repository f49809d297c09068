"""Integer sequences: batches, the phase curriculum at its boundaries, padding, per-family
validation, the memory estimate, and a short run in which the loss falls."""

from __future__ import annotations

import math
import re

import pytest
import torch

from conftest import CONFIGS, cli
from lit_loops.experiments.sequences.data import SequenceDataModule
from lit_loops.experiments.sequences.families import FAMILIES
from lit_loops.experiments.sequences.memory import estimate, measure_peak, report
from lit_loops.experiments.sequences.module import SequenceModule


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_batches_hold_window_plus_one_terms_of_known_families():
    dm = SequenceDataModule(window=16, batch_size=32)
    batch = dm.batch_maker()(gen(), 0)
    assert batch["seq"].shape == (32, 17) and batch["seq"].dtype == torch.long
    assert batch["seq"].min() >= 0 and batch["seq"].max() <= 255
    assert batch["valid"].all()
    names = dm.names
    assert all(
        FAMILIES[names[f]].phase == p for f, p in zip(batch["family"], batch["phase"], strict=True)
    )
    assert dm.model_args()["max_len"] == 16


@pytest.mark.parametrize(
    "step, shares",
    [
        (0, (1.0, 0.0, 0.0)),  # phase 1 only
        (999, (1.0, 0.0, 0.0)),  # the transition is 1000 wide, centred on step 1500
        (1500, (0.5, 0.5, 0.0)),
        (2000, (0.0, 1.0, 0.0)),
        (4500, (0.0, 0.5, 0.5)),  # phase 2 ends at 1500 + 3000
        (5000, (0.0, 0.0, 1.0)),
        (10**6, (0.0, 0.0, 1.0)),
    ],
)
def test_curriculum_mix_at_its_boundaries(step, shares):
    dm = SequenceDataModule(batch_size=4000, phase_steps=[1500, 3000], transition_steps=1000)
    assert dm.curriculum.current(step) == pytest.approx(
        dict(zip(["phase1", "phase2", "phase3"], shares, strict=True))
    )
    phase = dm.batch_maker()(gen(step), step)["phase"]
    got = [(phase == p).float().mean().item() for p in (1, 2, 3)]
    assert got == pytest.approx(shares, abs=0.03)


def test_jump_transition_switches_at_once():
    dm = SequenceDataModule(phase_steps=[100, 100], transition="jump")
    assert dm.curriculum.current(99)["phase1"] == 1.0
    assert dm.curriculum.current(100)["phase2"] == 1.0


def test_families_from_some_phases_only():
    dm = SequenceDataModule(
        families=["constant", "geometric"], phase_steps=[10], transition_steps=4
    )
    assert dm.curriculum.names == ["phase1", "phase2"]
    with pytest.raises(ValueError, match="phase_steps"):
        SequenceDataModule(
            families=["constant", "geometric"], phase_steps=[10, 20], transition_steps=4
        )
    with pytest.raises(ValueError, match="families='fibonnaci' is invalid"):
        SequenceDataModule(families=["fibonnaci"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"window": 100}, "window=100 is invalid: must be an integer in [2, 64]"),
        ({"replay": -0.1}, "replay=-0.1 is invalid: must be a finite number in [0.0, 1.0)"),
        ({"families": ["fibonacci_like", "primes"]}, "families='primes' is invalid: must be one of ['constant', "),
    ],
)  # fmt: skip
def test_datamodule_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        SequenceDataModule(**kwargs)


def test_variable_length_pads_after_the_kept_terms():
    dm = SequenceDataModule(variable_length=True, min_terms=3, batch_size=500)
    batch = dm.batch_maker()(gen(), 0)
    kept = batch["valid"].sum(1)
    assert kept.min() == 3 and kept.max() == 9
    assert (batch["valid"][:, :-1] >= batch["valid"][:, 1:]).all()  # real terms come first
    assert (batch["seq"][~batch["valid"]] == 0).all()


def test_validation_has_every_family_equally_and_is_fixed():
    dm = SequenceDataModule(val_per_family=10)
    batches = dm.val_batches()
    assert [b["family"].unique().item() for b in batches] == list(range(len(FAMILIES)))
    again = SequenceDataModule(val_per_family=10).val_batches()
    assert all(torch.equal(a["seq"], b["seq"]) for a, b in zip(batches, again, strict=True))


def test_validation_metrics_per_family_phase_and_the_random_baselines():
    """A model that always predicts the true next term scores 1.0 everywhere."""
    dm = SequenceDataModule(
        families=["constant", "geometric", "fibonacci_mod"], phase_steps=[1, 1], transition_steps=0
    )
    module = SequenceModule(**dm.model_args(), net={"d_model": 8, "n_heads": 1})

    def oracle(tokens):  # logits peaked on the true next terms, from the batch
        return torch.nn.functional.one_hot(oracle.next, 256).float() * 50

    module.forward = oracle
    logged = {}
    module.log = lambda name, value, **kw: logged.__setitem__(name, value)
    module.log_dict = lambda d, **kw: logged.update(d)
    for batch in dm.val_batches():
        oracle.next = batch["seq"][:, 1:]
        module.validation_step(batch, 0)
    module.on_validation_epoch_end()
    assert logged["val/acc"] == 1.0 and logged["val/distance"] == 0.0
    assert logged["val/acc_phase1"] == logged["val/acc_phase3"] == 1.0
    assert logged["val_family/acc_geometric"] == 1.0
    assert math.isclose(logged["val/random_distance"], 85.33, abs_tol=0.01)
    assert math.isclose(logged["val/random_loss"], math.log(256))


def test_memory_estimate_follows_the_document_and_counts_the_training_state():
    sizes = estimate(
        d_model=2, n_layers=2, n_heads=1, d_ff=32, seq_len=8, batch_size=64, num_parameters=1000
    )
    assert sizes["embedding"] == 256 * 2 * 4
    assert sizes["layers"] == 2 * (2 * (2 * 1 * 8 * 4) + 32 * 8 * 4)
    assert sizes["batch"] == 64 * 8 * 2 * 4
    assert sizes["total"] == 3 * sizes["forward (document)"] + 4 * 1000 * 4
    dm = SequenceDataModule(batch_size=16)
    module = SequenceModule(**dm.model_args(), net={"d_model": 16, "n_heads": 2})
    peak = measure_peak(module, dm.batch_maker()(gen(), 0))
    assert peak >= 0
    assert "fits in 8 GB" in report(sizes, peak, 8.0)
    assert "does NOT fit" in report({**sizes, "total": 9 * 2**30}, None, 8.0)


def test_sequence_loss_falls(in_tmp):
    """A small model on phase 1 for 300 steps: the cross-entropy falls well below the
    random predictor's ln 256 = 5.55 and the distance well below its 85.33."""
    run = cli(
        "fit",
        "--config", CONFIGS / "sequences" / "cpu.yaml",
        "--data.init_args.families=[constant,arithmetic_up,arithmetic_down,alternating]",
        "--data.init_args.phase_steps=[]",
        "--data.init_args.val_per_family=50",
        "--model.init_args.net.d_model=32",
        "--model.init_args.net.n_layers=2",
        "--model.init_args.net.n_heads=2",
        "--model.init_args.net.d_mlp=64",
        "--model.init_args.optim.warmup_steps=30",
        "--trainer.max_steps=300",
        "--trainer.val_check_interval=300",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    )  # fmt: skip
    metrics = run.trainer.callback_metrics
    print({k: round(v.item(), 3) for k, v in metrics.items() if k.startswith("val/")})
    assert metrics["val/ce"] < 5.545 - 0.5
    assert metrics["val/distance"] < 85.33 / 4
    assert metrics["val/acc"] > 20 / 256
