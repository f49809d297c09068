"""Next-term prediction on integer sequences over 0..255 (seed 002) with a three-phase
curriculum: the vectorised sequence families (families.py)."""

from lit_loops.experiments.sequences.families import (
    FAMILIES,
    GEOMETRIC_RATIOS,
    MIXED_PATTERNS,
    PHASES,
    RANGE_RULES,
    RATIONAL_PAIRS,
    Family,
    family_bank,
    generate,
    generate_rows,
    get_family,
    sample_mixture,
)

__all__ = [
    "FAMILIES",
    "GEOMETRIC_RATIOS",
    "MIXED_PATTERNS",
    "PHASES",
    "RANGE_RULES",
    "RATIONAL_PAIRS",
    "Family",
    "family_bank",
    "generate",
    "generate_rows",
    "get_family",
    "sample_mixture",
]
