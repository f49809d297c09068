"""The benchmark harness (``make bench``): its arithmetic, its fresh-process measurement,
and that every section has what the runner calls. The figures themselves come from
``make bench``, never from tests."""

from __future__ import annotations

import importlib

import pytest

from benchmarks.common import fmt, measure, ratio, spread
from benchmarks.run import SECTIONS


def test_spread_and_ratio_of_medians_with_the_widest_bounds():
    a, b = spread([1.0, 2.0, 3.0]), spread([2.0, 4.0])
    assert a == {"median": 2.0, "min": 1.0, "max": 3.0}
    r = ratio(a, b)
    assert r == pytest.approx({"median": 2.0 / 3.0, "min": 1.0 / 4.0, "max": 3.0 / 2.0})
    assert fmt(a) == "2.00 (1.00-3.00)"


def test_measure_runs_the_function_in_fresh_processes():
    results = measure("benchmarks.generation", "generate", repeats=2, cached=True, length=4)
    assert len(results) == 2 and all(r["tokens_per_s"] > 0 for r in results)


@pytest.mark.parametrize("name", list(SECTIONS))
def test_every_section_has_run_markdown_and_a_docstring(name):
    module = importlib.import_module(SECTIONS[name])
    assert callable(module.run) and callable(module.markdown)
    assert (module.__doc__ or "").strip()
