"""Next-term prediction on integer sequences over 0..255 (seed 002) with a three-phase
curriculum: the sequence families (families.py), their banks (banks.py), the held-out
parameters (heldout.py), real OEIS sequences (real.py) and their evaluation (evaluate.py)."""

from lit_loops.experiments.sequences.banks import family_bank, generate_rows
from lit_loops.experiments.sequences.evaluate import RealSequencesEval
from lit_loops.experiments.sequences.families import (
    FAMILIES,
    GEOMETRIC_RATIOS,
    MIXED_PATTERNS,
    PHASES,
    RANGE_RULES,
    RATIONAL_PAIRS,
    Family,
)

__all__ = [
    "FAMILIES",
    "GEOMETRIC_RATIOS",
    "MIXED_PATTERNS",
    "PHASES",
    "RANGE_RULES",
    "RATIONAL_PAIRS",
    "Family",
    "RealSequencesEval",
    "family_bank",
    "generate_rows",
]
