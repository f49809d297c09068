"""How much of this machine's arithmetic a training step uses: the model FLOPs of one
training step over its time, as a fraction of the FLOP/s of a large matrix product
measured in the same run (the practical ceiling of one core), for each experiment's
largest CPU config, and for ICL also at the papers' shapes.

* FLOPs: one training step (forward, backward, optimizer step: a real
  ``lightning.Trainer`` on the config's model and data, as in the data-generation
  section) counted with ``torch.utils.flop_counter.FlopCounterMode``: matrix products and
  SDPA (torch's formulas, taught here the CPU flash-attention kernel's names; a causal
  or masked attention is counted as full, as torch counts it; the backward includes the
  recomputed scores). Element-wise work, norms and softmax are not counted: they are time
  without FLOPs here, which is the point of the figure;
* step time: median over the steps after the first 2 (1 for the paper shapes), one
  thread;
* ceiling: the median FLOP/s of a 2048 x 2048 float32 matrix product (2 * 2048^3 FLOPs),
  one thread, in its own process like every measurement here;
* configs: per experiment the ``cpu*.yaml`` config with the most parameters (override
  files stacked on the folder's ``cpu.yaml``, as the tests run them); ICL at the end of
  its curricula (full dimension and prompt length, where most of a run is spent), and the
  papers' shapes: ``paper.yaml`` (12 layers, 256 wide, 8
  heads, d = 20, 41 points, batch 64, the papers' batch).

Target: >= 60 % of the ceiling for the compute-bound configs (the block-recurrent one and
ICL at the papers' shapes); the others are reported for context.
"""

from __future__ import annotations

import statistics
import time

from benchmarks.common import CONFIGS, config_stacks, fmt, measure, spread
from benchmarks.data_generation import build, fit, scratch, step_timer

TARGET = 0.60
MATMUL_N = 2048
PAPER_SHAPES = "icl/paper.yaml"
COMPUTE_BOUND = ("block_recurrent", PAPER_SHAPES)


def ceiling(n: int = MATMUL_N, reps: int = 7) -> dict:
    """FLOP/s of an ``n`` x ``n`` float32 matrix product (median of ``reps``)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return {"gflop_per_s": 2 * n**3 / statistics.median(times) / 1e9}


def cpu_stacks() -> dict[str, list[list[str]]]:
    """Per experiment, its ``cpu*.yaml`` configs as stacks (overrides on ``cpu.yaml``)."""
    out: dict[str, list[list[str]]] = {}
    for stack in config_stacks().values():
        if stack[-1].name.startswith("cpu"):
            names = [str(p.relative_to(CONFIGS)) for p in stack]
            out.setdefault(stack[0].parent.name, []).append(names)
    return out


def parameters(stacks: list[list[str]]) -> dict:
    """Parameter count of each stack's model (``"+"``-joined stack -> count)."""
    out = {}
    with scratch():
        for stack in stacks:
            model = build(stack).model
            out["+".join(stack)] = sum(p.numel() for p in model.parameters())
    return out


def flop_mode():
    """A FlopCounterMode that also knows the CPU flash-attention kernels (torch's SDPA
    formulas; its registry names only the CUDA ones)."""
    import torch
    from torch.utils.flop_counter import (
        FlopCounterMode,
        sdpa_backward_flop_count,
        sdpa_flop_count,
    )

    def four_d(shape):
        return (int(torch.Size(shape[:-3]).numel()), *shape[-3:]) if len(shape) != 4 else shape

    def forward(query, key, value, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(four_d(query), four_d(key), four_d(value))

    def backward(grad_out, query, key, value, *args, out_shape=None, **kwargs):
        return sdpa_backward_flop_count(four_d(grad_out), four_d(query), four_d(key), four_d(value))

    aten = torch.ops.aten
    return FlopCounterMode(
        display=False,
        custom_mapping={
            aten._scaled_dot_product_flash_attention_for_cpu: forward,
            aten._scaled_dot_product_flash_attention_for_cpu_backward: backward,
        },
    )


def step_flops_timer(count_at: int):
    """A callback timing every training batch and counting the FLOPs of batch
    ``count_at`` (not timed: the counter slows it down)."""
    import lightning as L

    timer = step_timer()

    class FlopsAndTimes(L.Callback):
        def __init__(self) -> None:
            self.times = timer.times
            self.flops, self.by_op, self.mode = None, {}, None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == count_at:
                self.mode = flop_mode()
                self.mode.__enter__()
            else:
                timer.on_train_batch_start(trainer, pl_module, batch, batch_idx)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx == count_at:
                self.mode.__exit__(None, None, None)
                self.flops = self.mode.get_total_flops()
                counts = self.mode.get_flop_counts().get("Global", {})
                self.by_op = {str(op): int(n) for op, n in counts.items()}
            else:
                timer.on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    return FlopsAndTimes()


def efficiency(stack: list[str], steps: int = 4, warmup: int = 2) -> dict:
    """Step time (median of ``steps`` after ``warmup``) and FLOPs of one training step."""
    with scratch():
        cli = build(stack)
        params = sum(p.numel() for p in cli.model.parameters())
        batch = cli.datamodule.hparams.batch_size
        callback = step_flops_timer(count_at=warmup + steps)
        fit(cli, warmup + steps + 1, [callback])
    step_s = statistics.median(callback.times[warmup:])
    return {
        "params": params,
        "batch_size": batch,
        "gflop": callback.flops / 1e9,
        "step_s": step_s,
        "gflop_per_s": callback.flops / 1e9 / step_s,
        "gflop_by_op": {op: n / 1e9 for op, n in callback.by_op.items()},
        "step_s_each": callback.times,
    }


def run(repeats: int = 3, quick: bool = False) -> dict:
    """The ceiling and every experiment's largest CPU config ``repeats`` times (1 when
    ``quick``), one process each, taking turns; ICL at the papers' shapes once (its step
    takes seconds)."""
    r = 1 if quick else repeats
    me = "benchmarks.efficiency"
    stacks = [s for group in cpu_stacks().values() for s in group]
    counts = measure(me, "parameters", 1, stacks=stacks)[0]
    largest = {}
    for experiment, group in cpu_stacks().items():
        largest[experiment] = max(group, key=lambda s: counts["+".join(s)])
    plan = {"+".join(s): {"stack": s} for s in largest.values()}
    plan[PAPER_SHAPES] = {"stack": [PAPER_SHAPES], "steps": 3, "warmup": 1}
    results: dict[str, list[dict]] = {name: [] for name in plan}
    peaks: list[dict] = []
    for i in range(r):
        peaks += measure(me, "ceiling", 1)
        for name, kwargs in plan.items():
            if name == PAPER_SHAPES and i > 0:
                continue
            results[name] += measure(me, "efficiency", 1, **kwargs)
    peak = spread([p["gflop_per_s"] for p in peaks])
    out = {"target": TARGET, "ceiling_gflop_per_s": peak, "parameters": counts, "configs": {}}
    for name, rs in results.items():
        achieved = spread([x["gflop_per_s"] for x in rs])
        out["configs"][name] = {
            "params": rs[0]["params"],
            "batch_size": rs[0]["batch_size"],
            "gflop": rs[0]["gflop"],
            "gflop_by_op": rs[0]["gflop_by_op"],
            "step_s": spread([x["step_s"] for x in rs]),
            "gflop_per_s": achieved,
            # the achieved rate over the median ceiling (the ceiling's spread is shown apart)
            "fraction": {k: v / peak["median"] for k, v in achieved.items()},
            "compute_bound": any(name.startswith(c) for c in COMPUTE_BOUND),
        }
    return out


NOTES = """
Where the time goes (``torch.profiler``, one step each, one thread, ceiling about 88
GFLOP/s). Block recurrent (``cpu.yaml``, 57.6 GFLOP per step, near the target: 54-64 %
across runs on this shared machine): matrix products take 52 % of the step at about 71
GFLOP/s (81 % of the ceiling; its products are 128 wide, short inner dimensions next to
the ceiling's 2048), SDPA 25 % at about 63 GFLOP/s (17.4 of the 57.6 GFLOP; its masks
are explicit, so the fused kernel computes every tile and counting them in full is
fair), and 23 % is element-wise work with no FLOPs: multiplies 4.4 % (378 calls: rotary /
xPos and the state gates), GELU forward and backward 5.1 %, concatenations 2.2 % (179
calls: XL memories and states), adds, layer norms and copies. What would raise it: fusing
that element-wise work (``torch.compile`` of the block: rotary multiply, gates and GELU
in one pass; up to the 23 %, about 75 % of the ceiling) or wider blocks (at dim 256 the
products are longer and their share grows). ICL at the papers' shapes (316 GFLOP per
step, 84 %): matrix products take 79 % of the step at about 84 GFLOP/s (95 % of the
ceiling: 256 wide, a 1024-wide MLP, 5,248 rows), SDPA 10 % at about 40 GFLOP/s (82-token
prompts, heads of 32), the rest 10 %. For context, ICL's CPU config (43 %): its 64-wide
products run at about 48 GFLOP/s and SDPA on 22-token prompts with 16-wide heads at
about 11 GFLOP/s (23 % of the step for 1 GFLOP): sizes this small are overhead-bound.
"""


def markdown(out: dict) -> str:
    peak = out["ceiling_gflop_per_s"]
    lines = [
        "| config | parameters | batch | GFLOP per step | step s | achieved GFLOP/s | "
        "ceiling GFLOP/s | fraction | target |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in out["configs"].items():
        pct = {k: 100 * v for k, v in r["fraction"].items()}
        if r["compute_bound"]:
            ok = "met" if r["fraction"]["median"] >= out["target"] else "**missed**"
            target = f">= {100 * out['target']:.0f} % ({ok})"
        else:
            target = "(context)"
        lines.append(
            f"| {name} | {r['params'] / 1e6:.2f} M | {r['batch_size']} | {r['gflop']:.1f} | "
            f"{fmt(r['step_s'], 3)} | {fmt(r['gflop_per_s'], 1)} | {fmt(peak, 1)} | "
            f"{fmt(pct, 1, ' %')} | {target} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    import json
    import sys

    result = run(quick="--quick" in sys.argv)
    print(json.dumps(result, indent=1))
    print(markdown(result))
