"""Curriculum phase mixing (shared) and the SUBLEQ task curriculum built on it."""

import pytest
import torch

from conftest import CONFIGS, cli
from lit_loops.experiments.subleq.data import TASKS, SubleqBatchMaker, make_batch
from lit_loops.experiments.subleq.machine import MachineSpec, decode, random_states
from lit_loops.schedules import PhaseSchedule


@pytest.mark.parametrize(
    "step, mix",
    [(0, [1, 0, 0]), (80, [1, 0, 0]), (90, [0.75, 0.25, 0]), (100, [0.5, 0.5, 0]),
     (120, [0, 1, 0]), (200, [0, 0.5, 0.5]), (220, [0, 0, 1]), (10**6, [0, 0, 1])],
)  # fmt: skip
def test_linear_transitions_overlap_around_each_boundary(step, mix):
    schedule = PhaseSchedule(["copy", "pc", "step"], [100, 100], "linear", 40)
    torch.testing.assert_close(schedule.mix(step), torch.tensor(mix, dtype=torch.float))


def test_jumps_switch_at_the_boundary():
    schedule = PhaseSchedule(["a", "b"], [10], "jump", transition_steps=50)  # width ignored
    assert schedule.mix(9).tolist() == [1.0, 0.0] and schedule.mix(10).tolist() == [0.0, 1.0]


def test_samples_follow_the_mix():
    schedule = PhaseSchedule(["a", "b", "c"], [100, 100], "linear", 40)
    phases = schedule.sample(90, 20000, torch.Generator().manual_seed(0))
    share = torch.bincount(phases, minlength=3) / 20000
    torch.testing.assert_close(share, torch.tensor([0.75, 0.25, 0.0]), atol=0.015, rtol=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"names": []}, "names=\\[\\] is invalid"),
     ({"phase_steps": [10, 10]}, "phase_steps=\\[10, 10\\] is invalid: must give the length"),
     ({"transition": "smooth"}, "transition='smooth' is invalid"),
     ({"transition_steps": 50}, "transition_steps=50 is invalid: must not exceed the shortest phase")],
)  # fmt: skip
def test_bad_schedules_are_rejected(kwargs, match):
    args = {
        "names": ["a", "b"],
        "phase_steps": [20],
        "transition": "linear",
        "transition_steps": 10,
    }
    with pytest.raises(ValueError, match=match):
        PhaseSchedule(**{**args, **kwargs})


def test_subleq_tasks_copy_then_pc_then_full_step():
    spec = MachineSpec()
    state = random_states(spec, 64, torch.Generator().manual_seed(0))
    full = make_batch(spec, state)
    for name in TASKS:
        batch = make_batch(spec, state, torch.full((64,), TASKS.index(name)))
        got, before, after = (
            decode(spec, batch["target"]),
            decode(spec, batch["input"]),
            decode(spec, full["target"]),
        )
        if name == "copy":
            torch.testing.assert_close(batch["target"], batch["input"])
        elif name == "pc":
            assert torch.equal(got.mem, before.mem) and torch.equal(got.pc, after.pc)
        else:
            torch.testing.assert_close(batch["target"], full["target"])


def test_the_batch_maker_draws_tasks_from_the_schedule_at_its_step():
    spec = MachineSpec()
    schedule = PhaseSchedule(["copy", "step"], [100], "jump")
    maker = SubleqBatchMaker(spec, 32, curriculum=schedule)
    early = maker(torch.Generator().manual_seed(0), step=5)
    late = maker(torch.Generator().manual_seed(0), step=500)
    torch.testing.assert_close(early["target"], early["input"])
    assert not torch.equal(late["target"], late["input"])


def test_curriculum_log_reports_the_mix(in_tmp):
    run = cli("fit", "--config", CONFIGS / "subleq" / "cpu.yaml", "--config", CONFIGS / "subleq" / "curriculum.yaml",
              "--trainer.fast_dev_run=true", "--model.init_args.net.n_layers=1")  # fmt: skip
    metrics = run.trainer.callback_metrics
    assert float(metrics["curriculum/copy"]) == 1.0 and float(metrics["curriculum/step"]) == 0.0


def test_replay_keeps_the_finished_phases_in_the_mix():
    schedule = PhaseSchedule(["a", "b", "c"], [100, 100], "jump", replay=0.4)
    assert schedule.mix(99).tolist() == [1.0, 0.0, 0.0]  # nothing finished yet
    assert schedule.mix(100).tolist() == pytest.approx([0.4, 0.6, 0.0])
    assert schedule.mix(250).tolist() == pytest.approx([0.2, 0.2, 0.6])
    assert sum(schedule.mix(10**6).tolist()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="replay=1.0 is invalid"):
        PhaseSchedule(["a", "b"], [10], replay=1.0)


def test_replay_weights_split_the_replay_share():
    # phase a holds 1 task, b 3: the replay share goes 1 : 3 once both are finished
    schedule = PhaseSchedule(
        ["a", "b", "c"], [100, 100], "jump", replay=0.4, replay_weights=[1, 3, 2]
    )
    assert schedule.mix(100).tolist() == pytest.approx([0.4, 0.6, 0.0])  # only a finished
    assert schedule.mix(250).tolist() == pytest.approx([0.1, 0.3, 0.6])
    with pytest.raises(ValueError, match="replay_weights=\\[1, 0, 1\\] is invalid"):
        PhaseSchedule(["a", "b", "c"], [10, 10], replay=0.5, replay_weights=[1, 0, 1])
    with pytest.raises(ValueError, match="one positive weight per phase: 2 numbers"):
        PhaseSchedule(["a", "b"], [10], replay=0.5, replay_weights=[1.0])
