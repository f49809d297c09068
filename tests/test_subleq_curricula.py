"""The SUBLEQ operand-range and instruction curricula: ``random_states``' ``value_bits`` and
``instructions``, and ``SubleqDataModule``'s ``operand_bits_*`` / ``instructions_*``."""

import pytest
import torch

from conftest import CONFIGS, cli
from lit_loops.experiments.subleq.data import SubleqDataModule
from lit_loops.experiments.subleq.machine import (
    MachineSpec,
    State,
    check_state,
    current_instruction,
    decode,
    encode,
    random_states,
    step,
)

SMALL = MachineSpec(16, 4, 4, 4)  # cpu.yaml: 8 instructions, N = 4
SEED = MachineSpec(32, 16, 8, 8)  # the seed's machine: 8 instructions, N = 8
SEED_ARGS = {"n": 32, "s": 16, "m": 8, "N": 8}


def states_equal(x: State, y: State) -> bool:
    return bool(x.equal(y).all()) and x.batch_size == y.batch_size


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def maker_of(dm: SubleqDataModule):
    """The DataModule's training batch maker, ``maker(generator, step) -> batch``."""
    return dm.train_dataloader().dataset.make_batch


def k_bit_range(k: int) -> tuple[int, int]:
    return -(1 << (k - 1)), (1 << (k - 1)) - 1


# --- random_states ----------------------------------------------------------------------
@pytest.mark.parametrize("spec", [SMALL, SEED], ids=["N4", "N8"])
def test_value_bits_draws_the_k_bit_range_and_all_of_it(spec):
    for k in range(1, spec.N + 1):
        x = random_states(spec, 4000, gen(k), value_bits=k)
        check_state(spec, x)
        lo, hi = k_bit_range(k)
        assert set(x.mem.unique().tolist()) == set(range(lo, hi + 1)), k
        # Nothing else restricted: every instruction token is still a jump target.
        assert x.pc.unique().numel() == spec.num_instructions


def test_instructions_draws_pc_and_c_among_the_first_k():
    spec = SMALL
    start = spec.inst_start
    for k in range(1, spec.num_instructions + 1):
        x = random_states(spec, 2000, gen(k), instructions=k)
        check_state(spec, x)
        assert set(x.pc.unique().tolist()) == set(range(start, start + k)), k
        assert set(x.inst[..., 2].unique().tolist()) == set(range(start, start + k)), k
        # a and b still range over every memory token, memory over the full N bits.
        assert x.inst[..., :2].unique().numel() == spec.m
        assert x.mem.unique().numel() == 1 << spec.N


def test_one_step_of_a_k_instruction_program_lands_in_its_first_k_plus_1():
    """A jump lands among the first k; falling through the k-th leads on to the (k+1)-th
    (the ring of "next" is the whole machine's), and both happen."""
    spec, k = SMALL, 3
    x = random_states(spec, 2000, gen(0), instructions=k)
    pc = step(spec, x).pc
    assert set(pc.unique().tolist()) == set(range(spec.inst_start, spec.inst_start + k + 1))


@pytest.mark.parametrize("fraction", [0.0, 0.5])
@pytest.mark.parametrize("spec", [SMALL, SEED], ids=["N4", "N8"])
def test_none_and_the_full_values_give_todays_states(spec, fraction):
    today = random_states(spec, 256, gen(7), fraction)
    for kw in (
        {"value_bits": None, "instructions": None},
        {"value_bits": spec.N},
        {"instructions": spec.num_instructions},
        {"value_bits": spec.N, "instructions": spec.num_instructions},
    ):
        assert states_equal(random_states(spec, 256, gen(7), fraction, **kw), today), kw


def test_restrictions_leave_the_other_draws_alone():
    """Only ranges change, not the number or order of draws: with the same generator the
    unrestricted fields come out the same (torch's CPU randint takes one 32-bit draw per
    element whatever the range), so a curriculum does not reshuffle the rest of a state."""
    today = random_states(SMALL, 256, gen(3))
    short = random_states(SMALL, 256, gen(3), instructions=2)
    small = random_states(SMALL, 256, gen(3), value_bits=2)
    assert torch.equal(short.mem, today.mem) and torch.equal(
        short.inst[..., :2], today.inst[..., :2]
    )
    assert torch.equal(small.inst, today.inst) and torch.equal(small.pc, today.pc)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_branch_boundary_stays_in_the_small_range_and_on_the_boundary(k):
    spec = SEED
    x = random_states(spec, 3000, gen(k), branch_boundary_fraction=1.0, value_bits=k)
    check_state(spec, x)
    lo, hi = k_bit_range(k)
    assert int(x.mem.min()) >= lo and int(x.mem.max()) <= hi
    rows = torch.arange(x.batch_size)
    a, b, _ = current_instruction(spec, x).unbind(-1)
    gap = x.mem[rows, b - spec.s] - x.mem[rows, a - spec.s]
    assert set(gap.unique().tolist()) <= {-1, 0, 1}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"value_bits": 0}, "value_bits=0"),
        ({"value_bits": 5}, "value_bits=5"),  # > N = 4
        ({"value_bits": 2.0}, "value_bits=2.0"),
        ({"instructions": 0}, "instructions=0"),
        ({"instructions": 9}, "instructions=9"),  # > 8 instruction tokens
    ],
)  # fmt: skip
def test_random_states_rejects_bad_restrictions(kwargs, match):
    with pytest.raises(ValueError, match=match):
        random_states(SMALL, 4, gen(0), **kwargs)


# --- the DataModule ---------------------------------------------------------------------
def test_operand_curriculum_stages_in_training_batches():
    dm = SubleqDataModule(**SEED_ARGS, batch_size=512, operand_bits_start=2, operand_bits_every=3)
    maker = maker_of(dm)
    for k in range(2, 9):
        for s in (3 * (k - 2), 3 * (k - 2) + 2):  # the first and last step of the stage
            assert dm.operand_bits.value(s) == k
            state = decode(SEED, maker(gen(s), s)["input"])
            lo, hi = k_bit_range(k)
            assert int(state.mem.min()) >= lo and int(state.mem.max()) <= hi, (k, s)
    late = decode(SEED, maker(gen(0), 10**6)["input"])  # the end: the full range again
    assert int(late.mem.min()) < -64 and int(late.mem.max()) > 63


def test_instruction_curriculum_stages_in_training_batches():
    dm = SubleqDataModule(batch_size=512, instructions_start=2, instructions_every=4)
    maker, start = maker_of(dm), SMALL.inst_start
    for k in range(2, 9):
        for s in (4 * (k - 2), 4 * (k - 2) + 3):
            assert dm.instructions.value(s) == k
            state = decode(SMALL, maker(gen(s), s)["input"])
            assert int(state.pc.max()) < start + k and int(state.inst[..., 2].max()) < start + k
    late = decode(SMALL, maker(gen(0), 10**6)["input"])
    assert late.pc.unique().numel() == 8 and late.inst[..., 2].unique().numel() == 8


def test_a_curriculum_at_its_end_draws_todays_batches():
    plain = maker_of(SubleqDataModule(branch_boundary_fraction=0.3))
    both = maker_of(
        SubleqDataModule(
            branch_boundary_fraction=0.3,
            operand_bits_start=1,
            operand_bits_every=10,
            instructions_start=1,
            instructions_every=10,
        )
    )
    for s in (70, 500):  # N = 4 from step 30, 8 instructions from step 70
        x, y = plain(gen(s), s), both(gen(s), s)
        torch.testing.assert_close(x["input"], y["input"], rtol=0, atol=0)
        torch.testing.assert_close(x["target"], y["target"], rtol=0, atol=0)
    early = both(gen(0), 0)
    assert not torch.equal(plain(gen(0), 0)["input"], early["input"])


def test_targets_of_curriculum_states_are_the_simulators_step():
    dm = SubleqDataModule(
        **SEED_ARGS,
        batch_size=256,
        branch_boundary_fraction=0.5,
        operand_bits_start=2,
        instructions_start=2,
    )
    maker = maker_of(dm)
    for s in (0, 1500, 4000):
        batch = maker(gen(s), s)
        state = decode(SEED, batch["input"])
        torch.testing.assert_close(batch["target"], encode(SEED, step(SEED, state)), rtol=0, atol=0)


def test_validation_stays_the_full_machine():
    plain = SubleqDataModule(**SEED_ARGS, val_size=256)
    curric = SubleqDataModule(**SEED_ARGS, val_size=256, operand_bits_start=1, instructions_start=1)
    for x, y in zip(plain.val_batches(), curric.val_batches(), strict=True):
        torch.testing.assert_close(x["input"], y["input"], rtol=0, atol=0)
    state = decode(SEED, curric.val_batches()[0]["input"])
    assert int(state.mem.min()) < -64 and state.pc.unique().numel() == 8


def test_curriculum_log_values_include_the_new_names():
    dm = SubleqDataModule(**SEED_ARGS, operand_bits_start=2, instructions_start=3)
    assert dm.curriculum.current(0) == {"operand_bits": 2.0, "instructions": 3.0}
    assert dm.curriculum.current(2500) == {"operand_bits": 4.0, "instructions": 5.0}
    assert dm.curriculum.current(10**6) == {"operand_bits": 8.0, "instructions": 8.0}
    # With the task curriculum: all of them.
    dm = SubleqDataModule(tasks=["copy", "step"], phase_steps=[100], operand_bits_start=2)
    assert dm.curriculum.current(0) == {"copy": 1.0, "step": 0.0, "operand_bits": 2.0}
    assert SubleqDataModule().curriculum is None


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"operand_bits_start": 0}, r"operand_bits_start=0 is invalid"),
        ({"operand_bits_start": 5}, r"operand_bits_start=5 is invalid: must not exceed N=4"),
        ({"operand_bits_start": "2"}, r"operand_bits_start='2' is invalid"),
        ({"operand_bits_increment": -1}, r"operand_bits_increment=-1 is invalid"),
        ({"operand_bits_every": 0}, r"operand_bits_every=0 is invalid"),
        ({"instructions_start": 0}, r"instructions_start=0 is invalid"),
        ({"instructions_start": 9}, r"instructions_start=9 is invalid: must not exceed n - s - m = 8"),
        ({"instructions_increment": -2}, r"instructions_increment=-2 is invalid"),
        ({"instructions_every": 0}, r"instructions_every=0 is invalid"),
        ({"operand_bits_start": 2, "train_size": 100}, r"operand_bits_start=2 is invalid: needs fresh training states \(train_size=0"),
        ({"instructions_start": 2, "train_size": 100}, r"instructions_start=2 is invalid: .*fixed training set"),
    ],
)  # fmt: skip
def test_datamodule_rejects_bad_curriculum_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SubleqDataModule(**kwargs)


def test_a_two_step_fit_with_both_curricula(in_tmp):
    run = cli(
        "fit", "--config", CONFIGS / "subleq" / "cpu.yaml",
        "--data.init_args.operand_bits_start=2", "--data.init_args.instructions_start=2",
        "--model.init_args.net.d_model=32", "--model.init_args.net.n_layers=1",
        "--model.init_args.net.d_mlp=64", "--trainer.max_steps=2",
        "--trainer.val_check_interval=2", "--data.init_args.val_size=64",
        "--trainer.enable_progress_bar=false",
    )  # fmt: skip
    assert run.trainer.global_step == 2
    metrics = run.trainer.callback_metrics
    assert float(metrics["curriculum/operand_bits"]) == 2.0
    assert float(metrics["curriculum/instructions"]) == 2.0
    assert "val/exact_match" in metrics
