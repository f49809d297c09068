"""Integer sequences: batches, the phase curriculum at its boundaries, padding, per-family
validation, the scores at every prefix on a hand-built model, the held-out validation set,
the memory estimate, and a short run in which the loss falls."""

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


def test_replay_by_family_feeds_every_family_alike_at_the_end():
    """``replay_by="family"``: the replay share split by the phases' family counts (5, 9),
    so that at the end phase 2's nine families get as much each as phase 1's five."""
    by_phase = SequenceDataModule(phase_steps=[100, 100], transition="jump", replay=0.6)
    by_family = SequenceDataModule(
        phase_steps=[100, 100], transition="jump", replay=0.6, replay_by="family"
    )
    assert by_phase.schedule.mix(10**6).tolist() == pytest.approx([0.3, 0.3, 0.4])
    assert by_family.schedule.mix(10**6).tolist() == pytest.approx(
        [0.6 * 5 / 14, 0.6 * 9 / 14, 0.4]
    )
    assert by_family.schedule.mix(150).tolist() == pytest.approx([0.6, 0.4, 0.0])
    phases = by_family.batch_maker()(gen(), 10**6)["phase"]
    share = torch.bincount(phases, minlength=4)[1:] / len(phases)
    torch.testing.assert_close(share, torch.tensor([0.214, 0.386, 0.4]), atol=0.08, rtol=0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"window": 100}, "window=100 is invalid: must be an integer in [2, 64]"),
        ({"replay": -0.1}, "replay=-0.1 is invalid: must be a finite number in [0.0, 1.0)"),
        ({"families": ["fibonacci_like", "primes"]}, "families='primes' is invalid: must be one of ['constant', "),
        ({"small_share": 1.0}, "small_share=1.0 is invalid: must be a finite number in [0.0, 1.0)"),
        ({"heldout_params": "yes"}, "heldout_params='yes' is invalid: must be a bool"),
        ({"replay_by": "task"}, "replay_by='task' is invalid: must be one of ['phase', 'family']"),
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


def successor_module(families: list[str]) -> SequenceModule:
    """A module whose model always answers "the last term plus one" (logits peaked there),
    so every score is known by hand."""
    module = SequenceModule(
        max_len=8, family_names=families, family_phases=[FAMILIES[f].phase for f in families],
        net={"d_model": 8, "n_heads": 1},
    )  # fmt: skip
    module.forward = lambda tokens: torch.nn.functional.one_hot((tokens + 1) % 256, 256) * 50.0
    return module


def run_validation(module: SequenceModule, loaders: list[list[dict]]) -> dict:
    logged = {}
    module.log = lambda name, value, **kw: logged.__setitem__(name, value)
    module.log_dict = lambda d, **kw: logged.update(d)
    for idx, batches in enumerate(loaders):
        for batch in batches:
            module.validation_step(batch, 0, idx)
    module.on_validation_epoch_end()
    return {k: float(v) for k, v in logged.items() if not hasattr(v, "compute")}


def batch_of(family: int, rows: list[list[int]], keep: list[int] | None = None) -> dict:
    seq = torch.tensor(rows)
    valid = torch.ones_like(seq, dtype=torch.bool)
    if keep is not None:  # variable length: the first keep[i] terms of row i are real
        valid = torch.arange(seq.shape[1])[None, :] < torch.tensor(keep)[:, None]
        seq = seq.masked_fill(~valid, 0)
    family_ = torch.full((len(rows),), family)
    return {"seq": seq, "valid": valid, "family": family_, "phase": family_ * 0 + 1}


def test_scores_at_every_prefix_on_a_hand_built_model():
    """The successor model on four phase-1 families (scored from 1, 2, 2 and 3 terms):

    * constant 7, 7, ...: wrong everywhere (distance 1);
    * arithmetic 0, 1, 2, ...: right from 2 terms; 0, 2, 4, ...: wrong (distance 1);
      a padded row (5 real terms): right at prefixes 2..4, nothing after;
    * alternating 3, 4, 3, ...: right after an odd number of terms (3, 5, 7 of 2..8),
      wrong after the full window;
    * Fibonacci 1, 1, 2, 3, 5, ...: right after 2 terms, not scored (the parameters are
      not fixed yet), and after 3, wrong from 4 on (distances 1, 2, 4, 7, 12).
    """
    names = ["constant", "arithmetic_up", "alternating", "fibonacci_like"]
    module = successor_module(names)
    val = [
        batch_of(0, [[7] * 9]),
        batch_of(1, [list(range(9)), list(range(0, 18, 2)), list(range(9))], keep=[9, 9, 5]),
        batch_of(2, [[3, 4] * 4 + [3]]),
        batch_of(3, [[1, 1, 2, 3, 5, 8, 13, 21, 34]]),
    ]
    got = run_validation(module, [val])
    arith = (7 + 3) / (7 + 7 + 3)  # scored predictions: 7 + 7 + 3 (padded), right 7 + 3
    expected = {
        "val_family/acc_constant": 0.0, "val_family/distance_constant": 1.0,
        "val_family/acc_arithmetic_up": arith,
        "val_family/acc_alternating": 3 / 7,
        "val_family/acc_fibonacci_like": 1 / 6, "val_family/distance_fibonacci_like": 26 / 6,
        "val/acc": (arith + 3 / 7 + 1 / 6) / 4,
        "val/acc_phase1": (arith + 3 / 7 + 1 / 6) / 4,
        # the full window: the last real prediction of every row
        "val_family/acc_full_arithmetic_up": 2 / 3, "val_family/acc_full_alternating": 0.0,
        "val/acc_full": (2 / 3) / 4, "val/distance_full_phase1": (1 + 1 / 3 + 2 + 12) / 4,
        # per prefix length, over the families scored there
        "val/acc_pos1": 0.0,  # only constant is fixed by one term
        "val/acc_pos2": (0 + 2 / 3 + 0) / 3,
        "val/acc_pos3": (0 + 2 / 3 + 1 + 1) / 4,
        "val/acc_pos4": (0 + 2 / 3 + 0 + 0) / 4,
        "val/acc_pos5": (0 + 1 / 2 + 1 + 0) / 4,  # the padded row has no 6th term
        "val/distance_pos8": (1 + 1 / 2 + 2 + 12) / 4,  # alternating: 5 for 3
    }  # fmt: skip
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), key
    assert "val/heldout_acc" not in got  # no held-out batch
    assert got["val/random_acc"] == 1 / 256


def test_the_heldout_loader_is_scored_apart_and_not_in_the_loss():
    module = successor_module(["constant", "arithmetic_up"])
    val = [batch_of(0, [[7] * 9] * 2)]
    held = [batch_of(1, [list(range(120, 129))])]
    got = run_validation(module, [val, held])
    assert got["val/acc"] == 0.0  # constant only (arithmetic had no validation batch)
    assert got["val/heldout_acc"] == 1.0 and got["val_heldout/acc_arithmetic_up"] == 1.0
    assert got["val/heldout_acc_pos2"] == 1.0 and math.isnan(got["val/heldout_acc_pos1"])
    assert module.val_loss.weight == 2  # the loss of the validation rows only
    assert math.isnan(got["val_family/acc_arithmetic_up"])


def test_heldout_validation_runs_through_the_cli(in_tmp):
    """cpu.yaml validates on the held-out parameters and on the real sequences
    (``RealSequencesEval``); fast_dev_run validates one batch of each loader."""
    run = cli(
        "fit",
        "--config", CONFIGS / "sequences" / "cpu.yaml",
        "--model.init_args.net.d_model=16",
        "--model.init_args.net.n_layers=1",
        "--model.init_args.net.n_heads=2",
        "--model.init_args.net.d_mlp=32",
        "--data.init_args.batch_size=16",
        "--data.init_args.val_per_family=4",
        "--trainer.fast_dev_run=true",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    )  # fmt: skip
    metrics = run.trainer.callback_metrics
    for key in ("val/loss", "val/acc", "val/acc_full", "val/acc_pos1", "val/heldout_acc",
                "val/real_acc", "val/real_acc_pos5", "val/real_acc_pos8", "val/real_out_acc",
                "val/real_distance"):  # fmt: skip
        assert key in metrics, key
    assert not any("dataloader_idx" in key for key in metrics)
    assert run.datamodule.hparams.heldout_params and run.datamodule.hparams.small_share == 0.25


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
