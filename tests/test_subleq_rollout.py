"""Rollouts of whole programs: the model fed its own quantized output, against the simulator."""

import subprocess
import sys

import torch

from conftest import CONFIGS, ROOT, cli
from lit_loops.experiments.subleq import (
    MachineSpec,
    decode,
    encode,
    program_inputs,
    programs_that_fit,
    step,
)
from lit_loops.experiments.subleq.machine import random_states
from lit_loops.experiments.subleq.rollout import quantize, rollout

SPEC = MachineSpec(n=16, s=4, m=4, N=4)


def simulator_as_model(x):
    """A perfect one-step 'model': the simulator behind the encoding."""
    return encode(SPEC, step(SPEC, decode(SPEC, x)))


def test_quantize_snaps_bits_and_clears_the_work_area():
    y = torch.randn(2, SPEC.n, SPEC.d)
    x = quantize(SPEC, y)
    assert set(x.unique().tolist()) <= {-1.0, 1.0}
    assert (x[:, :, SPEC.field_slices["work"]] == -1).all()
    torch.testing.assert_close(x[:, :, :5] > 0, y[:, :, :5] > 0)


def test_a_perfect_model_rolls_every_library_program_out_exactly():
    for name, prog in programs_that_fit(SPEC).items():
        state = prog.assemble(SPEC).initial_state(program_inputs(prog, SPEC.N))
        result = rollout(simulator_as_model, SPEC, state, prog.max_steps(SPEC.N))
        assert bool(result.exact.all()), name
        assert (result.first_divergence == 0).all()


def test_a_perfect_model_rolls_random_programs_out_exactly():
    state = random_states(SPEC, 64, torch.Generator().manual_seed(0))
    result = rollout(simulator_as_model, SPEC, state, 16)
    assert bool(result.exact.all()) and len(result.model_states) == 17


def test_the_first_divergence_is_reported():
    calls = {"n": 0}
    mem_sign = SPEC.field_slices["memory"].start

    def wrong_at_step_3(x):
        calls["n"] += 1
        y = simulator_as_model(x)
        if calls["n"] == 3:
            y[0, SPEC.s, mem_sign] *= -1  # flip the sign bit of memory word 0, element 0 only
        return y

    state = random_states(SPEC, 4, torch.Generator().manual_seed(1))
    result = rollout(wrong_at_step_3, SPEC, state, 8)
    assert result.first_divergence.tolist()[0] == 3 and not bool(result.exact[0])
    assert bool(result.exact[1:].all())


def test_the_rollout_script_traces_a_program_through_a_checkpoint(in_tmp):
    run = cli("fit", "--config", CONFIGS / "subleq" / "cpu.yaml", "--trainer.max_steps=2",
              "--trainer.val_check_interval=2", "--trainer.logger=false",
              "--trainer.enable_progress_bar=false", "--model.init_args.net.n_layers=1")  # fmt: skip
    ckpt = run.trainer.checkpoint_callback.best_model_path
    out = subprocess.run(
        [sys.executable, ROOT / "scripts" / "subleq_rollout.py", ckpt, "--trace", "add", "A=1", "B=2"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert out.startswith("add {'A': 1, 'B': 2}: ")
    assert "step | simulator PC mem | model PC mem" in out
    assert out.splitlines()[2].startswith("   0 |")  # step 0 is the input, the same on both sides
    assert "differs" not in out.splitlines()[2]


def test_rollout_eval_logs_whole_program_accuracy(in_tmp):
    import lightning as L

    from lit_loops.experiments.subleq import SubleqDataModule, SubleqModule
    from lit_loops.experiments.subleq.rollout import RolloutEval

    dm = SubleqDataModule(val_size=64)
    net = {"d_model": 16, "n_layers": 1, "d_mlp": 16, "n_heads": 2}
    module = SubleqModule(**dm.model_args(), net=net)
    trainer = L.Trainer(callbacks=[RolloutEval(random_programs=32)], logger=False,
                        enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    untrained = trainer.validate(module, dm)[0]
    assert untrained["val/rollout_exact"] == 0.0 and untrained["val/rollout_divergence"] == 1.0
    module.forward = simulator_as_model  # a perfect model
    perfect = trainer.validate(module, dm)[0]
    assert perfect["val/rollout_exact"] == 1.0 and perfect["val/rollout_exact_random"] == 1.0
    assert perfect["val/rollout_divergence"] == 0.0
