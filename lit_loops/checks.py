"""Argument validation with messages a user understands.

Every check raises ``ValueError("<name>=<value!r>: <what is allowed>")`` so that a typo in
a config fails at construction, before any compute, naming the argument, the value and
what would have been accepted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


def fail(name: str, value: Any, allowed: str) -> None:
    raise ValueError(f"{name}={value!r} is invalid: {allowed}")


def check(condition: bool, name: str, value: Any, allowed: str) -> None:
    if not condition:
        fail(name, value, allowed)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_int(
    name: str, value: Any, min_value: int | None = None, max_value: int | None = None
) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool)
    ok = (
        ok
        and (min_value is None or value >= min_value)
        and (max_value is None or value <= max_value)
    )
    if not ok:
        lo = "-inf" if min_value is None else min_value
        hi = "inf" if max_value is None else max_value
        fail(name, value, f"must be an integer in [{lo}, {hi}]")


def check_positive_int(name: str, value: Any) -> None:
    check_int(name, value, min_value=1)


def check_float(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> None:
    ok = _is_number(value)
    if ok and low is not None:
        ok = value >= low if low_inclusive else value > low
    if ok and high is not None:
        ok = value <= high if high_inclusive else value < high
    if not ok:
        lb = "[" if low_inclusive else "("
        hb = "]" if high_inclusive else ")"
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        fail(name, value, f"must be a finite number in {lb}{lo}, {hi}{hb}")


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> None:
    choices = list(choices)
    if value not in choices:
        fail(name, value, f"must be one of {choices}")


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    return all(n % d for d in range(3, math.isqrt(n) + 1, 2))


def check_data_decided(**values: Any) -> None:
    """Sizes the CLI fills in from the DataModule's ``model_args()``: set and positive."""
    for name, value in values.items():
        check(
            value is not None,
            name,
            value,
            "is set from the DataModule; pass it when building the module by hand",
        )
        check_positive_int(name, value)
