"""Out-of-context learning on modular arithmetic (seed 003)."""

from lit_loops.experiments.oocl.data import (
    OOCLDataModule,
    Vocab,
    linkage_examples,
    split_pairs,
    table_examples,
)
from lit_loops.experiments.oocl.module import OOCLModule

__all__ = [
    "OOCLDataModule",
    "OOCLModule",
    "Vocab",
    "linkage_examples",
    "split_pairs",
    "table_examples",
]
