"""The compiled SUBLEQ machine's checks, as reported in RESULTS.md (issue 22, part 2).

    python scripts/subleq_compile.py --config configs/subleq/cpu.yaml --out runs/subleq_compiled.ckpt
    python scripts/subleq_compiled_check.py runs/subleq_compiled.ckpt states    # 20000 random states, noise
    python scripts/subleq_compiled_check.py runs/subleq_compiled.ckpt library   # every library program
    python scripts/subleq_compiled_check.py runs/subleq_compiled.ckpt random    # random 16-step programs
    python scripts/subleq_compiled_check.py runs/subleq_compiled.ckpt loop --n 256  # 1000 steps, drift

Works on any SUBLEQ checkpoint (a trained one too); prints what it measured.
"""

import argparse
import time

import torch

from lit_loops.checkpoints import load_run
from lit_loops.experiments.subleq import (
    SubleqDataModule,
    SubleqModule,
    assemble,
    encode,
    loss_mask,
    program_inputs,
    programs_that_fit,
    random_states,
    step,
)
from lit_loops.experiments.subleq.rollout import rollout

LOOP = """
.word X 0
.word M1 -1
.word Y 5
loop: subleq M1 X neg
      subleq X Y loop
      subleq Z Z loop
neg:  subleq M1 Y loop
      subleq Z Z loop
"""

p = argparse.ArgumentParser()
p.add_argument("ckpt")
p.add_argument("what")
p.add_argument("--programs", nargs="*")
p.add_argument("--max-inputs", type=int, default=10**9)
p.add_argument("--n", type=int, default=20000)
p.add_argument("--seed", type=int, default=2026)
a = p.parse_args()
torch.set_grad_enabled(False)
module, data = load_run(a.ckpt, model_class=SubleqModule, data_class=SubleqDataModule)
module.eval()
spec = data.spec
params = list(module.model.parameters())
print(
    f"n={spec.n} N={spec.N} d={spec.d} D={module.net.d_model} params={sum(x.numel() for x in params)} nonzero={sum(int((x != 0).sum()) for x in params)}"
)
g = torch.Generator().manual_seed(a.seed)
mask = loss_mask(spec)
t0 = time.time()
if a.what == "states":
    for frac in (0.0, 1.0):
        st = random_states(spec, a.n, g, frac)
        y = module(encode(spec, st))
        tgt = encode(spec, step(spec, st))
        ok = (((y > 0) == (tgt > 0)) | ~mask).flatten(1).all(1)
        taken = (
            step(spec, st).pc
            != spec.inst_start + (st.pc - spec.inst_start + 1) % spec.num_instructions
        )
        margin = (y * torch.sign(tgt))[:, mask].min()
        print(
            f"one step, {a.n} random states (branch_boundary_fraction {frac}): exact {ok.float().mean():.6f} "
            f"({int(ok.sum())}/{a.n}); PC moved to c != next in {int(taken.sum())}; min signed margin {margin:.6g} (logit scale {module.model.head.weight.abs().max():.0f})"
        )
    # noise tolerance: uniform noise on every input entry
    st = random_states(spec, 4000, g)
    x = encode(spec, st)
    tgt = encode(spec, step(spec, st))
    for amp in (0.05, 0.3, 0.7, 0.74, 0.8, 0.9):
        xn = x + amp * (torch.rand(x.shape, generator=g) * 2 - 1)
        ok = (((module(xn) > 0) == (tgt > 0)) | ~mask).flatten(1).all(1)
        print(f"  input noise U(-{amp},{amp}): one step exact {ok.float().mean():.4f}")
elif a.what == "library":
    lib = programs_that_fit(spec)
    for name in a.programs or lib:
        prog = lib[name]
        inputs = program_inputs(prog, spec.N, a.max_inputs, g)
        r = rollout(module, spec, prog.assemble(spec).initial_state(inputs), prog.max_steps(spec.N))
        print(
            f"library {name}: {int(r.exact.sum())}/{len(r.exact)} exact (of {prog.num_inputs(spec.N)} valid inputs), max steps {int(r.steps.max())}  [{time.time() - t0:.0f}s]",
            flush=True,
        )
elif a.what == "random":
    st = random_states(spec, a.n, g)
    r = rollout(module, spec, st, 16)
    print(
        f"random 16-step programs: {int(r.exact.sum())}/{a.n} exact; halted early {int((r.steps < 16).sum())}"
    )
elif a.what == "loop":
    prog = assemble(spec, LOOP)
    X = torch.randint(spec.value_min, spec.value_max + 1, (a.n,), generator=g)
    Y = torch.randint(spec.value_min, spec.value_max + 1, (a.n,), generator=g)
    st = prog.initial_state({"X": X, "Y": Y})
    steps = 1000
    r = rollout(module, spec, st, steps, stop_when_all_wrong=False)
    jumps = sum(
        int((s1.pc != s0.pc + 1).sum())
        for s0, s1 in zip(r.simulator_states, r.simulator_states[1:], strict=False)
    )
    print(
        f"looping program, {a.n} inputs x {steps} steps, quantized rollout: {int(r.exact.sum())}/{a.n} exact; simulator steps min {int(r.steps.min())} (never halts); taken branches {jumps}"
    )
    # raw feedback: the network's output fed back as is (no quantization), in units of +-1
    net = module.model
    logit = float(net.head.weight.abs().max())
    x = encode(spec, st) / spec.scale
    worst = 0.0
    first_wrong = None
    for t, sim in enumerate(r.simulator_states[1:], 1):
        x = net(x) / logit
        dev = float((x - encode(spec, sim) / spec.scale)[:, mask].abs().max())
        worst = max(worst, dev)
        wrong = (((x > 0) != (encode(spec, sim) > 0)) & mask).flatten(1).any(1)
        if first_wrong is None and bool(wrong.any()):
            first_wrong = t
    x = encode(spec, st) / spec.scale
    gn = torch.Generator().manual_seed(7)
    worst_n = 0.0
    wrong_n = None
    for t, sim in enumerate(r.simulator_states[1:], 1):
        x = net(x + 0.5 * (torch.rand(x.shape, generator=gn) * 2 - 1)) / logit
        worst_n = max(worst_n, float((x - encode(spec, sim) / spec.scale)[:, mask].abs().max()))
        wrong = (((x > 0) != (encode(spec, sim) > 0)) & mask).flatten(1).any(1)
        if wrong_n is None and bool(wrong.any()):
            wrong_n = t
    print(
        f"  raw feedback with U(-0.5,0.5) noise added to every input entry each step: max deviation after the step {worst_n:.3g}; first wrong step {wrong_n}"
    )
    print(
        f"  raw feedback (no quantization) {steps} steps: max |x_t - encode(sim_t)| over all steps {worst:.3g}; first wrong step {first_wrong}"
    )
    # random programs, 1000 steps
    st = random_states(spec, 200, g)
    r = rollout(module, spec, st, steps)
    print(
        f"  200 random programs x {steps} steps: {int(r.exact.sum())}/200 exact; halted before {steps}: {int((r.steps < steps).sum())}"
    )
print(f"[{time.time() - t0:.0f}s]")
