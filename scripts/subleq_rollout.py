"""Roll whole SUBLEQ programs through a trained one-step checkpoint.

    python scripts/subleq_rollout.py CKPT                      # library + random programs
    python scripts/subleq_rollout.py CKPT --trace add A=3 B=2  # one program, step by step

Library: every program of ``PROGRAMS`` that fits the checkpoint's machine, on every valid
input (up to --max-inputs, sampled beyond that). Random: --random states run for --steps
steps. Prints the fraction of exact rollouts and where wrong ones first diverge.
"""

from __future__ import annotations

import argparse

import torch

from lit_loops.checkpoints import load_run
from lit_loops.experiments.subleq import (
    MachineSpec,
    SubleqDataModule,
    SubleqModule,
    decode,
    program_inputs,
    programs_that_fit,
)
from lit_loops.experiments.subleq.machine import random_states
from lit_loops.experiments.subleq.rollout import rollout


def load(ckpt: str) -> tuple[SubleqModule, MachineSpec]:
    module, data = load_run(ckpt, model_class=SubleqModule, data_class=SubleqDataModule)
    if data is None:
        raise SystemExit(f"{ckpt}: no SubleqDataModule saved in it (not a SUBLEQ run's checkpoint)")
    return module.eval(), data.spec


def summary(name: str, result) -> str:
    wrong = result.first_divergence[~result.exact]
    where = f"first divergence at step {wrong.float().median():.0f} (median)" if len(wrong) else ""
    return f"| {name} | {len(result.exact)} | {result.exact.float().mean():.4f} | {int(result.steps.max())} | {where} |"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("ckpt")
    parser.add_argument("--random", type=int, default=1000, help="random programs to roll out")
    parser.add_argument("--steps", type=int, default=16, help="steps of each random program")
    parser.add_argument("--max-inputs", type=int, default=512, help="inputs per library program")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--trace", nargs="+", metavar=("PROGRAM", "WORD=VALUE"), help="print one rollout"
    )
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    module, spec = load(args.ckpt)
    library = programs_that_fit(spec)
    if args.trace:
        name, *assignments = args.trace
        program = library[name].assemble(spec)
        values = {k: int(v) for k, v in (a.split("=") for a in assignments)}
        steps = library[name].max_steps(spec.N)
        state = program.initial_state(values)
        result = rollout(module, spec, state, steps, stop_when_all_wrong=False)  # whole trace
        verdict = (
            "exact"
            if bool(result.exact[0])
            else f"diverges at step {int(result.first_divergence[0])}"
        )
        print(f"{name} {values}: {verdict}")
        print("step | simulator PC mem | model PC mem")
        for t, (sim, x) in enumerate(
            zip(result.simulator_states, result.model_states, strict=True)
        ):
            got = decode(spec, x)
            mark = "" if sim.equal(got)[0] else "   <-- differs"
            print(
                f"{t:4d} | {int(sim.pc[0]):2d} {sim.mem[0].tolist()} | {int(got.pc[0]):2d} {got.mem[0].tolist()}{mark}"
            )
        return
    g = torch.Generator().manual_seed(args.seed)
    print("| programs | rollouts | exact | steps (max) | wrong ones |")
    print("| --- | --- | --- | --- | --- |")
    exact_all = []
    for name, prog in library.items():
        inputs = program_inputs(prog, spec.N, args.max_inputs, g)
        result = rollout(
            module, spec, prog.assemble(spec).initial_state(inputs), prog.max_steps(spec.N)
        )
        exact_all.append(result.exact)
        print(summary(name, result), flush=True)
    print(
        f"| library, all inputs | {len(torch.cat(exact_all))} | {torch.cat(exact_all).float().mean():.4f} | | |"
    )
    result = rollout(module, spec, random_states(spec, args.random, g), args.steps)
    print(summary(f"random, {args.steps} steps", result))


if __name__ == "__main__":
    main()
