"""Is batch generation ever the bottleneck? For every experiment's CPU and paper configs
(every base config: a file in ``configs/<experiment>/`` with a ``model: class_path``), the
time to generate one training batch over the time of one training step on it, both on
one thread in the same fresh process.

* generation: the config's training stream (``lit_loops.data.OnTheFlyBatches``, its
  batch maker called with the stream's own per-step generators), the median over 20 of
  its batches at the last steps of the config's run (so a curriculum is at its final mix);
  a stream that draws several steps in one call (the sequences' ``MultiStepBatches``, 8
  steps a call) is timed a call at a time, divided by its steps, over at least 5 calls;
  for ICL, whose stream carries only a seed and the curriculum's sizes, the
  ``materialize`` call that draws the prompts counts as generation too;
* step: a real ``lightning.Trainer`` on the config's model and data (its own callbacks
  and logger stripped, its precision and gradient clipping kept), the time from
  ``on_train_batch_start`` to ``on_train_batch_end`` (forward, backward, optimizer step;
  the batch is already made and, for ICL, materialised by then), median over the steps
  after the first 2, at least 4 of them and at least 1 s of them (a 6 ms step is timed
  about 170 times). One step is one batch through ``training_step``: enwik8 accumulates
  4 of them per optimizer step in its module;
* ICL is measured at the end of its curricula (``dims_start`` and ``points_start`` unset:
  full dimension and prompt length from step 0), on both sides, since most of a run is
  spent there.

Paper configs are sized for a GPU (one SUBLEQ paper step at batch 256 takes minutes on
this CPU): enwik8, the ICL ones and SUBLEQ run with a smaller batch (1, 4 and 2: the
table says which), the same override for the generator and the step, 3 steps timed after
1 warm-up, one repeat; SUBLEQ is shrunk furthest, its 200M-parameter step still takes
about 2 s at batch 2. The ratio hardly depends on the batch, and a smaller one errs in
favour of the generator's share: the step grows about linearly with the batch, the
generators less than linearly (they are a few vectorised ops, much of their time is
per-call overhead). OOCL's and the sequences' paper configs fit this CPU and run at
their own batch, like the CPU configs.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks.common import CONFIGS, config_stacks, fmt, measure, spread

PAPER_SCALE = ("paper", "enwik8")
TARGET = 0.02
# batch sizes for the GPU-sized configs on this CPU (None: the config's own)
PAPER_BATCH = {
    "block_recurrent/enwik8.yaml": 1,
    "oocl/paper.yaml": None,
    "sequences/paper.yaml": None,
    "subleq/paper.yaml": 2,
}
ICL_PAPER_BATCH = 4


def base_configs() -> list[str]:
    """Every config stack that sets its own data (``config_stacks``' ids): the base
    configs, and the overrides with a ``data:`` section (another task, another machine)."""
    out = []
    for name, stack in config_stacks().items():
        if len(stack) == 1 or (yaml.safe_load(stack[-1].read_text()) or {}).get("data"):
            out.append(name)
    return out


def stack_files(config: str) -> list[str]:
    """``icl/paper+paper_looped.yaml`` -> ``["icl/paper.yaml", "icl/paper_looped.yaml"]``."""
    folder, name = config.split("/")
    if "+" not in name:
        return [config]
    base, override = name.split("+")
    return [f"{folder}/{base}.yaml", f"{folder}/{override}"]


def is_paper(config: str) -> bool:
    return Path(config).name.startswith(PAPER_SCALE)


def paper_batch(config: str) -> int | None:
    if config.startswith("icl/"):
        return ICL_PAPER_BATCH
    return PAPER_BATCH.get(config)


def build(configs: list[str], overrides: list[str] = ()):
    """The LitLoopsCLI (run=False) of a stack of configs, its callbacks and logger
    stripped; ICL at the end of its curricula; enwik8 on a small stand-in file. Call it
    from a scratch directory (see ``scratch``)."""
    from lit_loops.cli import LitLoopsCLI

    args = [a for c in configs for a in ("--config", str(CONFIGS / c))]
    args += ["--trainer.logger=false", "--trainer.callbacks=[]"]
    class_path, init = "", {}  # the data section, later files over earlier ones
    for c in configs:
        data = (yaml.safe_load((CONFIGS / c).read_text()) or {}).get("data") or {}
        class_path = data.get("class_path", class_path)
        init.update(data.get("init_args") or {})
    if class_path.endswith("ICLDataModule"):
        args += ["--data.init_args.dims_start=null", "--data.init_args.points_start=null"]
    if init.get("source") == "enwik8":  # a stand-in for the 100 MB file
        fake = Path("enwik8_standin").resolve()
        fake.write_bytes(bytes(range(256)) * 400)
        args += [
            f"--data.init_args.path={fake}",
            "--data.init_args.enwik8_split=[60000,20000,20000]",
        ]
    return LitLoopsCLI(args=args + list(overrides), run=False)


class scratch:
    """Runs the body in a fresh temporary directory (nothing written under the repo)."""

    def __enter__(self):
        self.old, self.tmp = os.getcwd(), tempfile.TemporaryDirectory()
        os.chdir(self.tmp.name)
        return Path(self.tmp.name)

    def __exit__(self, *exc):
        os.chdir(self.old)
        self.tmp.cleanup()


def step_timer(
    warmup: int = 0, steps: int | None = None, min_seconds: float = 0.0, sync: bool = False
):
    """A callback recording each training batch's time (perf_counter from
    ``on_train_batch_start`` to ``on_train_batch_end``; ``sync``: after a
    ``torch.cuda.synchronize``, so that a GPU's queued work is in the batch that queued
    it) and the graphs ``torch.compile`` had made by then (``graphs``: a count that grows
    during the timed steps means they recompiled); with ``steps``, it stops the run once
    ``steps`` batches after ``warmup`` are timed and they add up to ``min_seconds``."""
    import lightning as L
    import torch

    from lit_loops.compile import compile_counts

    class StepTimer(L.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.graphs: list[int] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if sync:
                torch.cuda.synchronize()
            self.t = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if sync:
                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self.t)
            self.graphs.append(compile_counts()["unique_graphs"])
            timed = self.times[warmup:]
            if steps is not None and len(timed) >= steps and sum(timed) >= min_seconds:
                trainer.should_stop = True

    return StepTimer()


def fit(cli, batches: int, callbacks: list, accelerator: str = "cpu") -> None:
    """``batches`` training batches of the config's model and data, nothing else."""
    import lightning as L

    config_trainer = cli.trainer
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        max_epochs=1,
        limit_train_batches=batches,
        max_steps=config_trainer.max_steps,  # the learning-rate schedule's length
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        precision=config_trainer.precision,
        gradient_clip_val=config_trainer.gradient_clip_val,
        gradient_clip_algorithm=config_trainer.gradient_clip_algorithm,
        callbacks=callbacks,
    )
    trainer.fit(cli.model, cli.datamodule)


def generation_s(cli, calls: int = 20) -> list[float]:
    """Seconds per generated batch at the last steps of the run, as the training stream
    makes them (its own iteration and per-step generators); a stream that draws several
    steps in one call (``steps_per_call``, the sequences' ``MultiStepBatches``) is timed a
    call at a time and divided by its steps. At least ``calls`` batches, 5 calls."""
    dm = cli.datamodule
    dm.setup("fit")
    stream = dm.train_dataloader().dataset
    k = getattr(stream, "steps_per_call", 1)
    groups = max(5, -(-calls // k))
    materialize = getattr(dm, "materialize", None)
    last = max(int(cli.trainer.max_steps or 0), (groups + 1) * k)
    stream.start_step = last - (groups + 1) * k  # one extra call first: warm-up
    batches = iter(stream)
    times = []
    for _ in range(groups + 1):
        t = time.perf_counter()
        for _ in range(k):
            batch = next(batches)
            if materialize is not None:
                batch = materialize(batch, "cpu")
        times.append((time.perf_counter() - t) / k)
    return times[1:]


def ratio_for(
    config: str,
    batch_size: int | None = None,
    steps: int = 4,
    warmup: int = 2,
    min_seconds: float = 1.0,
    max_steps: int = 200,
) -> dict:
    """Generation and step time of one config: the median step after ``warmup``, over at
    least ``steps`` steps and ``min_seconds`` of them (at most ``max_steps``: fast steps
    are timed many times); ``batch_size``: an override of the config's, on both sides."""
    overrides = [f"--data.init_args.batch_size={batch_size}"] if batch_size else []
    with scratch():
        cli = build(stack_files(config), overrides)
        gen = generation_s(cli)
        timer = step_timer(warmup, steps, min_seconds)
        fit(cli, warmup + max(steps, max_steps), [timer])
        used = cli.datamodule.hparams.batch_size
    gen_s, step_s = statistics.median(gen), statistics.median(timer.times[warmup:])
    return {
        "batch_size": used,
        "generation_ms": 1000 * gen_s,
        "step_ms": 1000 * step_s,
        "ratio": gen_s / step_s,
        "steps_timed": len(timer.times) - warmup,
        "step_ms_each": [1000 * t for t in timer.times[:12]],
    }


def plan(config: str) -> dict:
    """``ratio_for``'s arguments for a config: CPU-sized ones at their own batch, at least
    4 steps and 1 s after 2; GPU-sized ones at a smaller batch, 3 steps after 1."""
    batch = paper_batch(config) if is_paper(config) else None
    if batch is None:
        return {"config": config}
    return {"config": config, "batch_size": batch, "steps": 3, "warmup": 1, "min_seconds": 0.0}


def run(repeats: int = 3, quick: bool = False) -> dict:
    """Every base config, one process each (those run at a smaller batch: 1 repeat; the
    others ``repeats`` up to 2, or 1 when ``quick``)."""
    me = "benchmarks.data_generation"
    out = {"target": TARGET, "configs": {}}
    for config in base_configs():
        kwargs = plan(config)
        shrunk = "batch_size" in kwargs
        # 2 repeats at most: 19 configs, and the whole of make bench must fit in 20 minutes
        results = measure(me, "ratio_for", 1 if quick or shrunk else min(repeats, 2), **kwargs)
        out["configs"][config] = {
            "paper": is_paper(config),
            "batch_size": results[0]["batch_size"],
            "batch_size_shrunk": shrunk,
            "steps_timed": [r["steps_timed"] for r in results],
            "step_ms_each": [r["step_ms_each"] for r in results],
            **{k: spread([r[k] for r in results]) for k in ("generation_ms", "step_ms", "ratio")},
        }
    return out


NOTES = """
``sequences/paper.yaml`` was the one miss (2.3-4.0 % in five quick measurements), not
because its generator was slow: the design document's model has 1,160 parameters (d_model
2, 2 layers, 1 head, feed-forward 32), so its whole step is 3-6 ms of per-call overhead
(Python outside any torch op, the 256-way log-softmax, small copies), and its generator
took 0.16 ms a batch, all dispatch overhead: about 40 ops on 64 x 9 integers at about 3 us
each, most of them not random draws (the phase lookup, the per-phase family loop, the bank
lookup, the phase table, the mask). What closed it: the training stream now draws 8 steps
in one call (``MultiStepBatches`` and ``SequenceBatchMaker.batches``, in the sequences'
``data.py``). Each step still has its own ``(seed, rank, step)`` generator making the same
draws in the same order (the phases, each phase's families, the bank rows: 3 or 4 small
random draws a step), so the stream is the same batch for batch (tested against the
one-step maker, through the curriculum's transitions, from a resumed step and with
workers); everything between the draws is done once for the 8 steps' rows. Measured: 0.04
ms a batch (0.09 ms one step a call, 0.16 ms before), about 1.2 % of its step. Every other
config is at least 3x under the target (the SUBLEQ CPU configs, about 0.5 %), most by 50x
or more; the paper configs' generators grow less than linearly with the batch (SUBLEQ 0.65
ms at batch 2 against 2.5 ms at its 256; ICL ReLU-net 0.22 ms at 4 against 2.4 ms at its
64) while their steps grow about linearly, so at their own batch the ratio is smaller
still.
"""


def markdown(out: dict) -> str:
    lines = [
        "| config | batch size used | generation ms | step ms | generation / step | target |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for config, r in out["configs"].items():
        batch = f"{r['batch_size']}" + (" (shrunk)" if r["batch_size_shrunk"] else "")
        pct = {k: 100 * v for k, v in r["ratio"].items()}
        ok = "met" if r["ratio"]["median"] <= out["target"] else "**missed**"
        lines.append(
            f"| {config} | {batch} | {fmt(r['generation_ms'], 2)} | {fmt(r['step_ms'], 1)} | "
            f"{fmt(pct, 3, ' %')} | <= {100 * out['target']:.0f} % ({ok}) |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    import json
    import sys

    result = run(quick="--quick" in sys.argv)
    print(json.dumps(result, indent=1))
    print(markdown(result))
