"""Out-of-context learning on modular arithmetic (seed 003)."""

from lit_loops.experiments.oocl.alignment import AliasAlignment, alias_metrics
from lit_loops.experiments.oocl.data import (
    OOCLDataModule,
    Vocab,
    linkage_examples,
    mixed_examples,
    split_pairs,
    table_examples,
)
from lit_loops.experiments.oocl.module import OOCLModule

__all__ = [
    "AliasAlignment",
    "OOCLDataModule",
    "OOCLModule",
    "Vocab",
    "alias_metrics",
    "linkage_examples",
    "mixed_examples",
    "split_pairs",
    "table_examples",
]
