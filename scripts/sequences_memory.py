"""Will a sequence config fit a device? The design document's memory estimate, the
training state it leaves out, and the measured peak of one training step.

    python scripts/sequences_memory.py --config configs/sequences/paper.yaml --budget-gb 8
"""

from __future__ import annotations

import argparse

import torch

from lit_loops.cli import LitLoopsCLI
from lit_loops.experiments.sequences.memory import estimate, measure_peak, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/sequences/cpu.yaml")
    parser.add_argument("--budget-gb", type=float, default=8.0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    cli = LitLoopsCLI(args=["--config", args.config], run=False)
    module, data = cli.model, cli.datamodule
    net = module.net
    batch = next(iter(data.train_dataloader()))
    sizes = estimate(
        net.d_model,
        net.n_layers,
        net.n_heads,
        net.mlp_width,
        data.hparams.window,
        data.hparams.batch_size,
        module.num_parameters,
    )
    print(f"{args.config}: {module.num_parameters:,} parameters, batch {data.hparams.batch_size}")
    print(report(sizes, measure_peak(module, batch, args.device), args.budget_gb))


if __name__ == "__main__":
    main()
