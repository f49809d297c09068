"""The compiled SUBLEQ machine (``experiments/subleq/compiled.py``): exact against the
simulator on the small machine, through the LightningModule and its checkpoint."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from conftest import CONFIGS, cli
from lit_loops.checkpoints import load_run
from lit_loops.experiments.subleq import (
    MachineSpec,
    SubleqDataModule,
    SubleqModule,
    encode,
    loss_mask,
    program_inputs,
    programs_that_fit,
    random_states,
    step,
)
from lit_loops.experiments.subleq.compiled import build_compiled, compiled_config
from lit_loops.experiments.subleq.rollout import rollout

SMALL = MachineSpec(n=16, s=4, m=4, N=4)
ROOT = Path(__file__).resolve().parents[1]


def wrong_states(spec: MachineSpec, predict, states) -> torch.Tensor:
    """``(B,) bool``: where ``predict``'s one step differs from ``machine.step`` on a scored
    bit."""
    with torch.no_grad():
        y = predict(encode(spec, states))
    target = encode(spec, step(spec, states))
    return (((y > 0) != (target > 0)) & loss_mask(spec)).flatten(1).any(1)


def small_module(loss: str = "bce") -> SubleqModule:
    return SubleqModule(
        n_tokens=SMALL.n, d_state=SMALL.d, loss=loss, kind="compiled", machine={"s": 4, "m": 4}
    ).eval()


def test_one_step_exact_on_random_states() -> None:
    model = build_compiled(SMALL)
    states = random_states(SMALL, 3000, torch.Generator().manual_seed(1), 0.3)
    assert int(wrong_states(SMALL, model, states).sum()) == 0
    with torch.no_grad():  # the output is exactly the next state's +-1 bits
        y = model(encode(SMALL, states))
    target = encode(SMALL, step(SMALL, states))
    assert torch.equal(y[..., loss_mask(SMALL)[0]], target[..., loss_mask(SMALL)[0]])


def test_the_check_can_fail() -> None:
    """A weight off by a little is caught: the comparison is against the simulator."""
    model = build_compiled(SMALL)
    with torch.no_grad():
        model.stack.blocks[2].mlp.down.weight.mul_(0.5)  # the subtraction's output halved
    states = random_states(SMALL, 500, torch.Generator().manual_seed(2))
    assert float(wrong_states(SMALL, model, states).float().mean()) > 0.1


def test_error_correction_snaps_noisy_inputs() -> None:
    """Inputs within 0.75 of +-1 give the exact next state, +-1 up to float32 rounding."""
    model = build_compiled(SMALL)
    g = torch.Generator().manual_seed(5)
    states = random_states(SMALL, 1000, g)
    x = encode(SMALL, states)
    x = x + 0.7 * (torch.rand(x.shape, generator=g) * 2 - 1)
    with torch.no_grad():
        y = model(x)
    target, cols = encode(SMALL, step(SMALL, states)), loss_mask(SMALL)[0]
    assert float((y[..., cols] - target[..., cols]).abs().max()) < 1e-5


def test_library_programs_roll_out_exactly() -> None:
    module = small_module()
    library = programs_that_fit(SMALL)
    g = torch.Generator().manual_seed(0)
    for name in ("add", "multiply", "countdown", "fibonacci"):
        prog = library[name]
        state = prog.assemble(SMALL).initial_state(program_inputs(prog, SMALL.N, 64, g))
        result = rollout(module, SMALL, state, prog.max_steps(SMALL.N))
        assert bool(result.exact.all()), name


@pytest.mark.parametrize("loss", ["bce", "l1"])
def test_module_kinds_and_scale(loss: str) -> None:
    spec = MachineSpec(n=16, s=4, m=4, N=4, scale=3.0)
    module = SubleqModule(
        n_tokens=16, d_state=spec.d, scale=3.0, loss=loss, kind="compiled", machine={"s": 4, "m": 4}
    ).eval()
    assert module.hparams.net["d_model"] == compiled_config(spec).d_model
    states = random_states(spec, 500, torch.Generator().manual_seed(3))
    assert int(wrong_states(spec, module, states).sum()) == 0
    if loss == "l1":  # regression losses: exactly +-scale
        with torch.no_grad():
            y = module(encode(spec, states))
        assert set(y[..., loss_mask(spec)[0]].unique().tolist()) == {-3.0, 3.0}


def _compile_script():
    path = ROOT / "scripts" / "subleq_compile.py"
    spec = importlib.util.spec_from_file_location("subleq_compile", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    script = _compile_script()
    config = script.load_config([str(ROOT / "configs" / "subleq" / "cpu.yaml")])
    module, datamodule = script.build(config)
    ckpt = tmp_path / "compiled.ckpt"
    torch.save(script.checkpoint(module, datamodule), ckpt)
    loaded = SubleqModule.load_from_checkpoint(ckpt, weights_only=True).eval()
    assert loaded.hparams.kind == "compiled"
    for key, value in module.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    run_module, data = load_run(ckpt, model_class=SubleqModule, data_class=SubleqDataModule)
    assert data.spec == SMALL
    states = random_states(SMALL, 500, torch.Generator().manual_seed(4))
    assert int(wrong_states(SMALL, run_module.eval(), states).sum()) == 0


@pytest.mark.slow  # the real CLI, its rollout callback included: ~4 s
def test_lit_loops_validate_takes_the_checkpoint(in_tmp: Path) -> None:
    """``lit-loops validate --config cpu.yaml --ckpt_path compiled.ckpt``: the config's
    trained model is replaced by the checkpoint's (as for a trained checkpoint)."""
    script = _compile_script()
    module, datamodule = script.build(script.load_config([str(CONFIGS / "subleq" / "cpu.yaml")]))
    torch.save(script.checkpoint(module, datamodule), in_tmp / "compiled.ckpt")
    run = cli(
        "validate", "--config", CONFIGS / "subleq" / "cpu.yaml",
        "--ckpt_path", in_tmp / "compiled.ckpt", "--trainer.logger=false",
        "--data.init_args.val_size=512", "--trainer.enable_progress_bar=false",
    )  # fmt: skip
    metrics = run.trainer.callback_metrics
    assert run.model.hparams.kind == "compiled"
    for key in ("val/exact_match", "val/rollout_exact", "val/rollout_exact_random"):
        assert float(metrics[key]) == 1.0, key


@pytest.mark.parametrize(
    ("machine", "match"),
    [
        (None, "machine"),
        ({"s": 4}, "machine"),
        ({"s": 4, "m": 4, "x": 1}, "unknown keys"),
        ({"s": 4, "m": 20}, "instruction token"),
        ({"s": 4, "m": 4, "N": 5}, "d_state"),
    ],
)
def test_invalid_machine_fails_clearly(machine, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SubleqModule(n_tokens=16, d_state=SMALL.d, kind="compiled", machine=machine)


def test_invalid_kind_and_spec_fail_clearly() -> None:
    with pytest.raises(ValueError, match="kind"):
        SubleqModule(n_tokens=16, d_state=SMALL.d, kind="handmade")
    with pytest.raises(ValueError, match="spec"):
        build_compiled({"n": 16})  # type: ignore[arg-type]


def test_init_noise_perturbs_the_compiled_weights_reproducibly() -> None:
    """``init_noise`` adds seeded Gaussian noise of that std to every compiled weight (the
    start of the noise experiment); it needs ``kind: compiled`` and a std >= 0."""
    exact = small_module()
    torch.manual_seed(0)
    noisy = SubleqModule(
        n_tokens=SMALL.n, d_state=SMALL.d, kind="compiled", machine={"s": 4, "m": 4},
        init_noise=0.1,
    )  # fmt: skip
    torch.manual_seed(0)
    again = SubleqModule(
        n_tokens=SMALL.n, d_state=SMALL.d, kind="compiled", machine={"s": 4, "m": 4},
        init_noise=0.1,
    )  # fmt: skip
    deltas = [
        (p - q).flatten()
        for p, q in zip(noisy.model.parameters(), exact.model.parameters(), strict=True)
    ]
    delta = torch.cat(deltas)
    assert abs(delta.std().item() - 0.1) < 0.005 and abs(delta.mean().item()) < 0.005
    for p, q in zip(noisy.model.parameters(), again.model.parameters(), strict=True):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="init_noise=0.1 is invalid.*kind: compiled"):
        SubleqModule(n_tokens=SMALL.n, d_state=SMALL.d, init_noise=0.1)
    with pytest.raises(ValueError, match="init_noise=-1"):
        SubleqModule(
            n_tokens=SMALL.n, d_state=SMALL.d, kind="compiled", machine={"s": 4, "m": 4},
            init_noise=-1.0,
        )  # fmt: skip
