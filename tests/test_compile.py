"""``compile: true`` (``lit_loops.compile``): what is compiled, that compiled training
agrees with eager training, that a new loop count does not recompile, and that exact
resume still holds with compile on.

Numerics: every CPU config stack (``configs/*/cpu*.yaml``, the overrides stacked on a
``cpu.yaml`` and the block-recurrent ``recall_cpu.yaml``: ``benchmarks.common.config_stacks``
ids with ``cpu`` in the name), shrunk, trains one step eager and one step compiled from the
same seed; the loss, every gradient and every weight after the optimizer step are compared.
Inductor fuses element-wise work and reorders the sums inside norms, softmax and
reductions, so compiled float32 results differ from eager ones in the last bits (measured:
at most 2e-6 of a tensor's largest gradient, losses equal to 1e-7); the tolerances are
about 50x that: ``LOSS_RTOL`` on the loss, ``GRAD_RTOL`` of each gradient tensor's largest
entry, ``WEIGHT_ATOL`` on the weights after one step. The OOCL case runs in the fast tier;
the rest (about 2 minutes of compiling, most of it the block-recurrent layers) are slow.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch
from test_reliability import AFTER, COMMON, EXPERIMENTS, interrupt, only_run_dir

from benchmarks.common import config_stacks
from benchmarks.data_generation import build, fit, scratch, stack_files
from conftest import cli
from lit_loops.compile import compile_counts, compile_units, is_compiled
from lit_loops.experiments.block_recurrent.model import BlockRecurrentLayer
from lit_loops.experiments.icl.module import ICLModule
from lit_loops.experiments.oocl.module import OOCLModule
from lit_loops.nn import Block

LOSS_RTOL = 1e-5
GRAD_RTOL = 1e-4
WEIGHT_ATOL = 1e-5

# Each experiment's CPU configs, shrunk so that a compiled step takes seconds to compile.
SHRINK = {
    "block_recurrent": [
        "--model.init_args.net.dim=32", "--model.init_args.net.dim_head=16",
        "--model.init_args.net.heads=2", "--data.init_args.batch_size=2",
    ],
    "icl": [
        "--model.init_args.net.d_model=16", "--model.init_args.net.n_layers=2",
        "--data.init_args.batch_size=8",
    ],
    "oocl": [
        "--data.init_args.p=11", "--data.init_args.batch_size=32",
        "--model.init_args.net.d_model=32", "--model.init_args.net.d_mlp=64",
    ],
    "sequences": [
        "--model.init_args.net.d_model=32", "--model.init_args.net.n_layers=2",
        "--model.init_args.net.d_mlp=64", "--data.init_args.batch_size=16",
        "--data.init_args.val_per_family=4",
    ],
    "subleq": [
        "--model.init_args.net.d_model=32", "--model.init_args.net.n_layers=2",
        "--model.init_args.net.d_mlp=64", "--data.init_args.batch_size=8",
    ],
}  # fmt: skip


def cpu_stacks() -> list[str]:
    """The ids of every CPU config stack (``benchmarks.common.config_stacks``)."""
    return [name for name in config_stacks() if "cpu" in name.split("/")[1]]


FAST = "oocl/cpu.yaml"


class StepRecord(L.Callback):
    """The loss, the gradients (before the optimizer step) and the weights (after it) of
    the network's parameters, for one training batch."""

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        params = pl_module.model.named_parameters()
        self.grads = {n: p.grad.detach().clone() for n, p in params if p.grad is not None}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.loss = float(loss)
        self.weights = {n: p.detach().clone() for n, p in pl_module.model.named_parameters()}


def one_step(stack: str, compile: bool) -> StepRecord:
    """One training step of the shrunk ``stack`` (a fresh torch.compile cache)."""
    torch._dynamo.reset()
    graphs = compile_counts()["unique_graphs"]
    overrides = [*SHRINK[stack.split("/")[0]], f"--model.init_args.compile={str(compile).lower()}"]
    with scratch():
        run = build(stack_files(stack), overrides)
        record = StepRecord()
        fit(run, 1, [record])
    record.graphs = compile_counts()["unique_graphs"] - graphs
    return record


def assert_agree(eager: StepRecord, compiled: StepRecord) -> None:
    assert compiled.graphs > 0  # it did compile (not a silent fall-back to eager)
    assert eager.graphs == 0
    assert compiled.loss == pytest.approx(eager.loss, rel=LOSS_RTOL)
    assert set(compiled.grads) == set(eager.grads) and eager.grads
    for name, g in eager.grads.items():
        scale = float(g.abs().max())
        diff = float((compiled.grads[name] - g).abs().max())
        assert diff <= GRAD_RTOL * scale + 1e-12, (name, diff, scale)
    for name, w in eager.weights.items():
        torch.testing.assert_close(compiled.weights[name], w, rtol=0, atol=WEIGHT_ATOL, msg=name)


@pytest.mark.parametrize(
    "stack",
    [pytest.param(s, marks=[] if s == FAST else [pytest.mark.slow]) for s in cpu_stacks()],
)
def test_one_compiled_step_agrees_with_an_eager_one(stack):
    assert_agree(one_step(stack, compile=False), one_step(stack, compile=True))


def test_every_cpu_config_is_covered():
    stacks = cpu_stacks()
    assert FAST in stacks and "block_recurrent/recall_cpu.yaml" in stacks
    assert {s.split("/")[0] for s in stacks} == set(SHRINK)


def oocl(compile: bool = False) -> OOCLModule:
    return OOCLModule(vocab_size=26, seq_len=5, net={"d_model": 32, "d_mlp": 64}, compile=compile)


def test_compile_is_off_by_default_and_compiles_the_blocks_in_place():
    module = oocl()
    assert module.hparams.compile is False
    module.configure_model()  # what the Trainer calls
    assert not any(is_compiled(m) for m in module.modules())

    module = oocl(compile=True)
    keys = list(module.state_dict())
    assert module.hparams.compile is True
    module.configure_model()
    units = [m for _, m in compile_units(module.model)]
    assert len(units) == 2 and all(isinstance(m, Block) and is_compiled(m) for m in units)
    assert list(module.state_dict()) == keys  # checkpoints load with compile on or off
    assert module.compile_network() == ["stack.blocks.0", "stack.blocks.1"]  # once is enough


def test_the_block_recurrent_layers_are_its_units():
    from lit_loops.experiments.block_recurrent.module import BlockRecurrentModule

    module = BlockRecurrentModule(num_tokens=16, sample_len=65, net={"dim": 32, "depth": 2,
        "heads": 2, "dim_head": 16, "max_seq_len": 64, "block_width": 32}, compile=True)  # fmt: skip
    assert [type(m) for _, m in compile_units(module.model)] == [BlockRecurrentLayer] * 2


def test_a_network_without_blocks_is_compiled_whole():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2))
    assert compile_units(net) == [("", net)]


@pytest.mark.parametrize("bad", ["yes", 1, None])
def test_compile_must_be_a_bool(bad):
    with pytest.raises(ValueError, match="compile"):
        oocl(compile=bad)


def test_a_new_loop_count_does_not_recompile():
    """The looped ICL model's unit is the block: 3 loops, then 5 and 8 (the curriculum and
    the extra loops change it every step) reuse the graphs compiled for the first."""
    torch._dynamo.reset()
    module = ICLModule(n_dims=3, n_points=5, looped=True, loop_window=2, compile=True,
                       net={"d_model": 16, "n_layers": 1, "n_heads": 2})  # fmt: skip
    module.configure_model()
    xs, ys = torch.randn(4, 5, 3), torch.randn(4, 5)
    eager = ICLModule(n_dims=3, n_points=5, looped=True, loop_window=2,
                      net={"d_model": 16, "n_layers": 1, "n_heads": 2})  # fmt: skip
    eager.load_state_dict(module.state_dict())

    def loss(m, loops):
        return torch.stack([(p - ys).pow(2).mean() for p in m.predictions(xs, ys, loops, 2)])

    loss(module, 3).sum().backward()  # compiles: the window's passes and the ones before
    graphs = compile_counts()["unique_graphs"]
    for loops in (5, 8):
        out = loss(module, loops)
        out.sum().backward()
        torch.testing.assert_close(out, loss(eager, loops), rtol=1e-5, atol=1e-6)
    assert compile_counts()["unique_graphs"] == graphs


@pytest.mark.parametrize(
    "experiment",
    [pytest.param(e, marks=[] if e == "oocl" else [pytest.mark.slow]) for e in EXPERIMENTS],
)
def test_exact_resume_holds_with_compile_on(tmp_path, monkeypatch, experiment):
    """As ``test_reliability``'s, compiled: uninterrupted, and interrupted at step 3 then
    resumed, end with the same weights bit for bit (the same compiled kernels on the same
    batches); the checkpoint's weights load into an eager module (the same keys)."""
    args = [*EXPERIMENTS[experiment], *COMMON, *AFTER.get(experiment, [])]
    args.append("--model.init_args.compile=true")
    for folder in ("full", "split"):
        (tmp_path / folder).mkdir()
    torch._dynamo.reset()  # each run compiles anew, as a run in its own process would
    monkeypatch.chdir(tmp_path / "full")
    full = cli("fit", *args)
    monkeypatch.chdir(tmp_path / "split")
    torch._dynamo.reset()
    assert interrupt(args, batch=4 if experiment == "block_recurrent" else 2) is not None
    ckpt = only_run_dir(tmp_path / "split" / "runs") / "checkpoints" / "interrupted.ckpt"
    torch._dynamo.reset()
    resumed = cli("fit", *args, "--ckpt_path", ckpt)
    assert resumed.trainer.global_step == 6
    assert all(is_compiled(m) for _, m in compile_units(resumed.model.model))
    for name, weight in full.model.state_dict().items():
        assert torch.equal(weight, resumed.model.state_dict()[name]), name
    # a resumed run keeps the checkpoint's hyperparameters, compile among them (the CLI
    # rebuilds what it saved); the weights also load into an eager module
    eager = type(resumed.model).load_from_checkpoint(ckpt, compile=False)
    assert not any(is_compiled(m) for m in eager.modules())
    saved = torch.load(ckpt, weights_only=False)["state_dict"]
    assert all(torch.equal(w, saved[name]) for name, w in eager.state_dict().items())
