"""The SUBLEQ training pieces: DataModule, the looped state encoder, SubleqModule, QuantizedEval."""

import math
import re

import lightning as L
import pytest
import torch

from conftest import CONFIGS
from lit_loops.callbacks import QuantizedEval
from lit_loops.cli import LitLoopsCLI
from lit_loops.experiments.subleq.assembler import assemble
from lit_loops.experiments.subleq.data import SubleqDataModule
from lit_loops.experiments.subleq.machine import (
    MachineSpec,
    State,
    current_instruction,
    decode,
    encode,
    loss_mask,
    step,
    written_mask,
)
from lit_loops.experiments.subleq.module import LOSSES, SubleqModule, state_encoder
from lit_loops.experiments.subleq.programs import PROGRAMS
from lit_loops.nn import Block, TransformerConfig, num_parameters
from lit_loops.optim import OPTIMIZERS, SCHEDULES

SPEC = MachineSpec(16, 4, 4, 4)


def small_module(dm=None, net=None, **kw):
    """A small SubleqModule; ``net``: fields over the small net, ``kw``: the module's own
    arguments (``optim`` a dict of OptimConfig fields over the module's defaults)."""
    dm = dm or SubleqDataModule()
    net = {"d_model": 32, "n_layers": 2, "n_heads": 4, "d_mlp": 64, **(net or {})}
    return SubleqModule(**dm.model_args(), net=net, **kw)


def train_batches(dm, k):
    it = iter(dm.train_dataloader())
    return [next(it) for _ in range(k)]


# --- the DataModule -----------------------------------------------------------------------
def test_batches_are_one_step_of_the_machine():
    dm = SubleqDataModule(batch_size=32)  # no Trainer attached
    batch = train_batches(dm, 1)[0]
    B, n, d = 32, SPEC.n, SPEC.d
    for key in ("input", "target"):
        assert batch[key].shape == (B, n, d) and batch[key].dtype == torch.float32
    assert batch["branch_taken"].shape == (B,) and batch["branch_taken"].dtype == torch.bool
    assert batch["written"].shape == (B, n, d) and batch["written"].dtype == torch.bool
    state = decode(SPEC, batch["input"])
    nxt = step(SPEC, state)
    torch.testing.assert_close(batch["target"], encode(SPEC, nxt), rtol=0, atol=0)
    b = current_instruction(SPEC, state)[:, 1]
    assert torch.equal(batch["branch_taken"], nxt.mem[torch.arange(B), b - SPEC.s] <= 0)
    assert torch.equal(batch["written"], written_mask(SPEC, state))
    assert torch.equal(batch["mask"], loss_mask(SPEC))
    assert batch["fields"]["memory"].sum() == SPEC.m * SPEC.N
    assert batch["fields"]["pc"].sum() == SPEC.log_n
    assert dm.model_args() == {"n_tokens": 16, "d_state": SPEC.d, "scale": 1.0}


def test_training_batches_differ_per_step_and_repeat_per_seed():
    a1, a2 = train_batches(SubleqDataModule(seed=1), 2)
    b1, _ = train_batches(SubleqDataModule(seed=1), 2)
    c1, _ = train_batches(SubleqDataModule(seed=2), 2)
    assert not torch.equal(a1["input"], a2["input"])
    assert torch.equal(a1["input"], b1["input"])
    assert not torch.equal(a1["input"], c1["input"])


def test_validation_set_is_fixed_and_full():
    dm = SubleqDataModule(val_size=300, val_batch_size=128, branch_boundary_fraction=0.5)
    batches = list(dm.val_dataloader())
    assert [len(b["input"]) for b in batches] == [128, 128, 44]
    again = list(SubleqDataModule(val_size=300, val_batch_size=128).val_dataloader())
    other = list(SubleqDataModule(val_size=300, val_batch_size=128, val_seed=1).val_dataloader())
    for x, y in zip(batches, again, strict=True):
        assert torch.equal(x["input"], y["input"])  # the training bias does not touch it
    assert not torch.equal(batches[0]["input"], other[0]["input"])


def test_fixed_training_set():
    dm = SubleqDataModule(train_size=5, batch_size=64)
    states = encode(SPEC, dm.train_states()).flatten(1)  # (5, n*d)
    seen = torch.cat([b["input"].flatten(1) for b in train_batches(dm, 3)])  # (192, n*d)
    assert len(seen.unique(dim=0)) <= 5
    assert (seen[:, None] == states[None]).all(-1).any(1).all()  # every input is in the set
    assert torch.equal(
        states, encode(SPEC, SubleqDataModule(train_size=5).train_states()).flatten(1)
    )


def test_branch_boundary_fraction_biases_training_only():
    dm = SubleqDataModule(branch_boundary_fraction=1.0, batch_size=256)
    state = decode(SPEC, train_batches(dm, 1)[0]["input"])
    rows = torch.arange(256)
    a, b, _ = current_instruction(SPEC, state).unbind(-1)
    diff = SPEC.wrap(state.mem[rows, b - SPEC.s] - state.mem[rows, a - SPEC.s])
    assert diff.abs().max() <= 1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n": 12}, re.escape("n=12 is invalid: must be a power of two >= 4")),
        # memory words of 63 bits do not fit an int64
        ({"N": 63}, re.escape("N=63 is invalid: must be an integer in [2, 62]")),
        (
            {"s": 8, "m": 8},
            re.escape(
                "m=8 is invalid: must leave at least 1 instruction token: s + m <= n - 1 = 15 (s=8)"
            ),
        ),
        (
            {"tasks": []},
            re.escape("tasks=[] is invalid: must name at least one task of ['copy', 'pc', 'step']"),
        ),
        ({"batch_size": 0}, "batch_size"),
        ({"val_size": 0}, "val_size"),
        ({"val_batch_size": -1}, "val_batch_size"),
        ({"branch_boundary_fraction": 1.5}, "branch_boundary_fraction"),
        ({"train_size": -1}, "train_size"),
        ({"num_workers": -1}, "num_workers"),
        ({"scale": 0.0}, "scale"),
    ],
)
def test_datamodule_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SubleqDataModule(**kwargs)


def test_memory_values_that_need_more_than_N_bits_are_refused():
    """No argument sets memory words (the data draws them within N bits); a program's
    words, the inputs given to it and a hand-made state are checked against N."""
    spec = MachineSpec(n=16, s=4, m=4, N=4)
    with pytest.raises(ValueError, match=re.escape(".word BIG=8 is invalid: must fit in N=4")):
        assemble(spec, ".word BIG 8\nhalt")
    program = PROGRAMS["add"].assemble(spec)
    with pytest.raises(ValueError, match=re.escape("word A=-9 is invalid: must fit in N=4 bits")):
        program.initial_state({"A": -9})
    state = program.initial_state()
    too_big = State(state.mem + 100, state.inst, state.pc)
    with pytest.raises(ValueError, match=r"state.mem=1\d\d is invalid: N=4 bits signed"):
        step(spec, too_big)


# --- the looped state encoder -------------------------------------------------------------
def looped(n_layers=2, loops=1):
    """The SUBLEQ encoder (bidirectional blocks, ``loops`` passes) on 8 tokens of 16 bits."""
    net = TransformerConfig(d_model=16, n_layers=n_layers, n_heads=4, d_mlp=32)
    return state_encoder(net, d_state=16, n_tokens=8, loops=loops)


def test_looped_encoder_shapes_and_input_injection():
    torch.manual_seed(0)
    model = looped(loops=3).eval()
    stack = model.stack
    assert not stack.causal and stack.loops == 3  # every token sees the whole state
    assert model(torch.randn(2, 8, 16)).shape == (2, 8, 16)
    e = torch.randn(2, 8, 16)
    assert stack(e).shape == (2, 8, 16)
    one_pass = e
    for block in stack.blocks:
        one_pass = block(one_pass)
    torch.testing.assert_close(stack(e, loops=1), one_pass)
    twice = e + one_pass  # the second pass sees z_1 + e
    for block in stack.blocks:
        twice = block(twice)
    torch.testing.assert_close(stack(e, loops=2), twice)
    assert not torch.allclose(stack(e, loops=2), stack(e, loops=3))
    torch.testing.assert_close(stack(e), stack(e, loops=3))  # the default loop count


def test_looped_weights_do_not_depend_on_loops():
    counts = {looped(loops=k).num_parameters() for k in (1, 4, 8)}
    assert len(counts) == 1
    stack = looped().stack
    assert num_parameters(stack) == num_parameters(Block(stack.cfg, causal=False)) * 2
    with pytest.raises(ValueError, match="loops"):
        looped(loops=0)


# --- the module ---------------------------------------------------------------------------
@pytest.mark.parametrize("loss", LOSSES)
def test_each_loss_runs_and_ignores_the_work_area(loss):
    torch.manual_seed(0)
    dm = SubleqDataModule(batch_size=8, scale=3.0)
    model = small_module(dm, loss=loss)
    batch = train_batches(dm, 1)[0]
    pred = model(batch["input"])
    assert pred.shape == batch["target"].shape
    value = model.loss(pred, batch)
    value.backward()
    assert torch.isfinite(value) and value > 0
    changed = pred.detach().clone()
    changed[:, :, SPEC.field_slices["work"]] = 1000.0  # only outputs the loss ignores
    torch.testing.assert_close(model.loss(changed, batch), value.detach())
    changed[:, 0, 0] += 1000.0  # a scored bit: the loss moves
    assert not torch.isclose(model.loss(changed, batch), value.detach())


def test_perfect_prediction_has_zero_regression_loss_at_any_scale():
    dm = SubleqDataModule(batch_size=8, scale=100.0)
    batch = train_batches(dm, 1)[0]
    for loss in ("l1", "l2", "huber"):
        assert small_module(dm, loss=loss).loss(batch["target"], batch) == 0


def test_the_cli_links_the_machine_into_the_model(in_tmp):
    base = ["--config", str(CONFIGS / "subleq" / "cpu.yaml"), "--data.init_args.n=32",
            "--data.init_args.scale=100", "--model.init_args.net.n_layers=1"]  # fmt: skip
    model = LitLoopsCLI(args=base, run=False).model
    spec = MachineSpec(32, 4, 4, 4, 100.0)
    assert (model.hparams.n_tokens, model.hparams.d_state, model.scale) == (32, spec.d, 100.0)
    with pytest.raises(ValueError, match="the data decides it"):
        LitLoopsCLI(args=[*base, "--model.init_args.scale=1.0"], run=False)
    assert SubleqModule(n_tokens=16, d_state=SPEC.d).scale == 1.0  # by hand: 1.0


def test_changed_weight_weighs_the_written_fields():
    dm = SubleqDataModule(batch_size=8)
    batch = train_batches(dm, 1)[0]
    # A prediction right everywhere except the written fields, which are all wrong.
    pred = torch.where(batch["written"], -batch["target"], batch["target"]) * 2.0
    per_bit = torch.nn.functional.binary_cross_entropy_with_logits(
        pred, (batch["target"] > 0).float(), reduction="none"
    )
    mask, written = batch["mask"].expand_as(pred), batch["written"]
    wrong, right = per_bit[written].sum(), per_bit[mask & ~written].sum()
    n_wrong, n_right = written.sum(), (mask & ~written).sum()
    for cw in (1.0, 4.0, 0.0):
        expected = (cw * wrong + right) / (cw * n_wrong + n_right)
        got = small_module(dm, changed_weight=cw).loss(pred, batch)
        torch.testing.assert_close(got, expected)
    assert small_module(dm, changed_weight=4.0).loss(pred, batch) > small_module(dm).loss(
        pred, batch
    )


def test_looped_module_has_the_weights_of_its_blocks():
    a = small_module(looped=True, loops=2)
    b = small_module(looped=True, loops=8)
    c = small_module(looped=False)
    assert a.num_parameters == b.num_parameters == c.num_parameters
    assert a.model.stack.loops == 2 and c.model.stack.loops == 1
    assert b.hparams.net["n_layers"] == b.net.n_layers == 2
    batch = train_batches(SubleqDataModule(batch_size=4), 1)[0]
    assert b(batch["input"]).shape == (4, SPEC.n, SPEC.d)


def lr_trace(model, steps):
    """The learning rate over ``steps`` optimizer steps of ``configure_optimizers``."""
    config = model.configure_optimizers()
    opt, sched = config["optimizer"], config["lr_scheduler"]["scheduler"]
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_each_optimizer_and_schedule_builds(optimizer, schedule):
    optim = {"optimizer": optimizer, "schedule": schedule, "warmup_steps": 10, "lr": 0.1}
    model = small_module(optim=optim)
    assert model.optim.weight_decay == 0.01  # a dict overrides the module's defaults only
    assert model.hparams.optim["lr"] == 0.1 and model.optim.lr == 0.1
    model.trainer = L.Trainer(max_steps=50, logger=False, enable_checkpointing=False)
    config = model.configure_optimizers()
    expected = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}
    assert type(config["optimizer"]) is expected[optimizer]
    decays = [g["weight_decay"] for g in config["optimizer"].param_groups]
    assert decays == [0.01, 0.0]  # matrices decay, biases and norms do not
    lr = lr_trace(model, 50)
    assert lr[0] == pytest.approx(0.01) and lr[9] == pytest.approx(0.1)  # warmup
    if schedule == "constant":
        assert lr[49] == pytest.approx(0.1)
    else:  # cosine
        assert lr[30] == pytest.approx(0.05) and lr[49] < 0.001  # half-way, near 0 at the end


def test_cosine_needs_max_steps():
    model = small_module(optim={"schedule": "cosine"})
    model.trainer = L.Trainer(max_steps=-1, max_epochs=1, logger=False)
    with pytest.raises(ValueError, match="max_steps"):
        model.configure_optimizers()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_tokens": None}, "n_tokens=None is invalid: is set from the DataModule"),
        ({"d_state": None}, "d_state=None is invalid: is set from the DataModule"),
        (
            {"loss": "hinge"},
            re.escape("loss='hinge' is invalid: must be one of ['l1', 'l2', 'huber', 'bce']"),
        ),
        ({"optim": {"optimizer": "lion"}}, "optim.optimizer='lion' is invalid"),
        ({"optim": {"schedule": "linear"}}, "optim.schedule='linear' is invalid"),
        ({"net": {"d_model": 30}}, "net.n_heads=4 is invalid: must divide net.d_model=30"),
        ({"net": {"n_layers": 0}}, "net.n_layers=0 is invalid"),
        ({"net": {"d_mlp": 0}}, "net.d_mlp=0 is invalid"),
        ({"loops": 0}, "loops=0 is invalid"),
        ({"optim": {"lr": 0.0}}, "optim.lr=0.0 is invalid"),
        (
            {"optim": {"lr": -0.001}},
            re.escape("optim.lr=-0.001 is invalid: must be a finite number in (0.0, inf]"),
        ),
        ({"changed_weight": -1.0}, "changed_weight=-1.0 is invalid"),
        ({"optim": {"warmup_steps": -1}}, "optim.warmup_steps=-1 is invalid"),
        ({"scale": 0.0}, "scale=0.0 is invalid"),
        ({"net": "big"}, "net='big' is invalid: must be a TransformerConfig or a dict"),
    ],
)
def test_module_rejects_bad_arguments(kwargs, match):
    args = {"n_tokens": 16, "d_state": SPEC.d, **kwargs}
    with pytest.raises(ValueError, match=match):
        SubleqModule(**args)


# --- QuantizedEval ------------------------------------------------------------------------
def quantized(pred, batch):
    cb = QuantizedEval()
    cb.update(pred, batch)
    return {name: float(metric.compute()) for name, metric in cb.metrics.items()}


def test_quantized_eval_on_crafted_outputs():
    batch = list(SubleqDataModule(val_size=64, val_batch_size=64).val_dataloader())[0]
    B, target = 64, batch["target"]
    perfect = quantized(target * 0.3, batch)  # any positive multiple snaps to the same bits
    assert perfect == {
        "bit_acc": 1.0,
        "exact_match": 1.0,
        "exact_branch_taken": 1.0,
        "exact_branch_not_taken": 1.0,
        "acc_memory": 1.0,
        "acc_pc": 1.0,
    }
    # One memory bit of state 0 flipped.
    pred = target.clone()
    pred[0, SPEC.s, SPEC.field_slices["memory"].start] *= -1
    out = quantized(pred, batch)
    assert out["exact_match"] == pytest.approx(1 - 1 / B)
    assert out["acc_memory"] == pytest.approx(1 - 1 / B)
    assert out["acc_pc"] == 1.0
    assert out["bit_acc"] == pytest.approx(1 - 1 / (B * int(batch["mask"].sum())))
    taken = batch["branch_taken"]
    group = "exact_branch_taken" if taken[0] else "exact_branch_not_taken"
    other = "exact_branch_not_taken" if taken[0] else "exact_branch_taken"
    assert out[group] == pytest.approx(1 - 1 / int((taken == taken[0]).sum()))
    assert out[other] == 1.0
    # A PC bit of state 1 flipped.
    pred = target.clone()
    pred[1, 0, SPEC.field_slices["pc"].start] *= -1
    out = quantized(pred, batch)
    assert out["acc_pc"] == pytest.approx(1 - 1 / B) and out["acc_memory"] == 1.0
    # The work area is not scored.
    pred = target.clone()
    pred[:, :, SPEC.field_slices["work"]] = 5.0
    assert quantized(pred, batch) == perfect


def test_quantized_eval_eps_and_bad_arguments():
    batch = list(SubleqDataModule(val_size=8, val_batch_size=8).val_dataloader())[0]
    # Outputs of +0.5 on the 1 bits read as 0 above eps = 1.
    assert quantized(batch["target"] * 0.5, batch)["exact_match"] == 1.0
    cb = QuantizedEval(eps=1.0)
    cb.update(batch["target"] * 0.5, batch)
    assert float(cb.metrics["exact_match"].compute()) == 0.0
    with pytest.raises(ValueError, match="prefix"):
        QuantizedEval(prefix="")
    with pytest.raises(ValueError, match="pred.shape"):
        QuantizedEval().update(batch["target"][:, :-1], batch)


class Oracle(L.LightningModule):
    """Predicts the target, wrong on one memory bit of the first state of the first batch."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Linear(1, 1)

    def validation_step(self, batch, batch_idx):
        pred = batch["target"].clone()
        if batch_idx == 0:
            pred[0, SPEC.s, SPEC.field_slices["memory"]] *= -1
        return {"pred": pred}


def test_quantized_eval_logs_through_a_trainer(in_tmp):
    dm = SubleqDataModule(val_size=200, val_batch_size=64)  # 4 batches: 64, 64, 64, 8
    trainer = L.Trainer(
        callbacks=[QuantizedEval()],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    (metrics,) = trainer.validate(Oracle(), datamodule=dm, verbose=False)
    assert metrics["val/exact_match"] == pytest.approx(1 - 1 / 200)
    assert metrics["val/acc_memory"] == pytest.approx(1 - 1 / 200)
    assert metrics["val/acc_pc"] == 1.0
    assert set(metrics) == {
        "val/bit_acc",
        "val/exact_match",
        "val/acc_memory",
        "val/acc_pc",
        "val/exact_branch_taken",
        "val/exact_branch_not_taken",
    }
    # The metrics start afresh on every validation run.
    dm = SubleqDataModule(val_size=50, val_batch_size=64)
    (metrics,) = trainer.validate(Oracle(), datamodule=dm, verbose=False)
    assert metrics["val/exact_match"] == pytest.approx(1 - 1 / 50)


# --- learning -----------------------------------------------------------------------------
def test_subleq_training_loss_falls():
    torch.manual_seed(0)
    dm = SubleqDataModule(batch_size=64)
    model = small_module(
        dm,
        net={"d_model": 64, "d_mlp": 128},
        optim={"warmup_steps": 10, "schedule": "constant", "lr": 1e-2},
    )
    opt = model.configure_optimizers()["optimizer"]
    losses = []
    for batch in train_batches(dm, 150):
        loss = model.loss(model(batch["input"]), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = losses[0], sum(losses[-10:]) / 10
    assert first == pytest.approx(math.log(2), abs=0.05)  # bce at init: chance
    assert last < first / 2, (first, last)


def test_program_trace_states_are_states_the_library_passes_through():
    from lit_loops.experiments.subleq import MachineSpec, State, programs_that_fit, run
    from lit_loops.experiments.subleq.data import program_trace_states

    spec = MachineSpec()
    pool = program_trace_states(spec, max_inputs=256)  # add's whole grid (16 x 16 inputs)
    add = programs_that_fit(spec)["add"]
    start = add.assemble(spec).initial_state({"A": 2, "B": 3})
    trace = run(spec, start, add.max_steps(spec.N))
    for state in trace.states[: int(trace.steps[0]) + 1]:  # every state of this run is in the pool
        assert bool(pool.equal(State.cat([state] * pool.batch_size)).any())


def test_trace_fraction_mixes_real_program_states_into_training_batches():
    from lit_loops.experiments.subleq.data import program_trace_states

    dm = SubleqDataModule(trace_fraction=1.0, batch_size=32)
    batch = next(iter(dm.train_dataloader()))
    pool = encode(dm.spec, program_trace_states(dm.spec, seed=0))  # (K, n, d)
    matches = (batch["input"][:, None] == pool[None]).flatten(2).all(-1).any(-1)  # (B,)
    assert bool(matches.all())
    assert not bool(
        (
            next(iter(SubleqDataModule(batch_size=32).train_dataloader()))["input"][:, None]
            == pool[None]
        )
        .flatten(2)
        .all(-1)
        .any(-1)
        .all()
    )  # without it, random states (almost never all from traces)
    with pytest.raises(ValueError, match="trace_fraction=1.5 is invalid"):
        SubleqDataModule(trace_fraction=1.5)
