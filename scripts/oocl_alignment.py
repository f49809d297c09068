"""What the aliases did in trained OOCL runs: alias alignment and probes of checkpoints.

    python scripts/oocl_alignment.py runs/oocl_*/*/checkpoints/last.ckpt [...]

Prints, per checkpoint, the metrics of ``lit_loops.experiments.oocl.alignment`` (the same
as the ``AliasAlignment`` callback logs as ``val/alias_*``) beside chance (1/p).
"""

from __future__ import annotations

import argparse

from lit_loops.checkpoints import load_run
from lit_loops.experiments.oocl import OOCLDataModule, OOCLModule
from lit_loops.experiments.oocl.alignment import alias_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoints", nargs="+")
    args = parser.parse_args()
    rows = []
    for path in args.checkpoints:
        module, data = load_run(path, model_class=OOCLModule, data_class=OOCLDataModule)
        data.setup()
        hp = data.hparams
        metrics = alias_metrics(module.eval().model, hp.p, hp.op, data.val_pairs[0])
        k = (module.hparams.k1, module.hparams.k2, module.hparams.k3)
        rows.append((path, k, 1 / hp.p, metrics))
    names = list(rows[0][3])
    print("checkpoint | (k1,k2,k3) | chance | " + " | ".join(names))
    for path, k, chance, metrics in rows:
        values = " | ".join(f"{metrics[n]:.3f}" for n in names)
        print(f"{path} | {k} | {chance:.3f} | {values}")


if __name__ == "__main__":
    main()
