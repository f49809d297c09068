"""The benchmark harness (``make bench``): its arithmetic, its fresh-process measurement,
and that every section has what the runner calls. The figures themselves come from
``make bench``, never from tests."""

from __future__ import annotations

import importlib
import os

import pytest
import torch

from benchmarks import gpu
from benchmarks.common import (
    compile_times,
    fmt,
    fmt_compile,
    fresh_compile_cache,
    measure,
    ratio,
    spread,
    steady_and_warmup,
)
from benchmarks.run import SECTIONS, keeps_previous


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


# -- the sequences' multi-step generator (the data-generation target) --------------------


def one_step_reference(maker, g: torch.Generator, step: int) -> dict:
    """A batch as the sequences' maker drew it one step a call (before ``batches``):
    ``PhaseSchedule.sample``, then each phase's families, then ``make_batch``."""
    from lit_loops.experiments.sequences.data import make_batch

    B = maker.batch_size
    phase = maker.schedule.sample(step, B, g)
    family = torch.empty(B, dtype=torch.long)
    for p, members in enumerate(maker.by_phase):
        rows = phase == p
        if rows.any():
            family[rows] = members[torch.randint(len(members), (int(rows.sum()),), generator=g)]
    return make_batch(
        maker.families, family, g, maker.length, maker.min_terms, maker.small_share, maker.split
    )


SEQUENCE_DATA = {
    "default": {},
    "replay, jumps": {"replay": 0.5, "transition": "jump"},
    "variable length": {"variable_length": True, "min_terms": 3},
    "held out, small starts": {"heldout_params": True, "small_share": 0.25},
    "one phase": {"families": ["constant", "arithmetic_up"], "phase_steps": []},
}


def sequence_data(**kwargs):
    from lit_loops.experiments.sequences.data import SequenceDataModule

    args = {"batch_size": 16, "phase_steps": [5, 10], "transition_steps": 4, "seed": 3}
    return SequenceDataModule(**{**args, **kwargs})


def assert_same_batches(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            assert x[key].dtype == y[key].dtype and torch.equal(x[key], y[key]), key


@pytest.mark.parametrize("kwargs", SEQUENCE_DATA.values(), ids=SEQUENCE_DATA.keys())
def test_the_sequences_maker_draws_several_steps_as_one_step_each(kwargs):
    """``batches`` (several steps a call) and ``maker(g, step)`` give the batches the maker
    gave one step a call, through the phase transitions."""
    from lit_loops.data import generator_for

    maker = sequence_data(**kwargs).batch_maker()
    steps = list(range(0, 20))
    reference = [one_step_reference(maker, generator_for(3, 0, s), s) for s in steps]
    assert_same_batches([maker(generator_for(3, 0, s), s) for s in steps], reference)
    together = maker.batches([generator_for(3, 0, s) for s in steps], steps)
    assert_same_batches(together, reference)


def test_the_sequences_stream_is_the_one_step_stream():
    """The training loader (``MultiStepBatches``, 8 steps a call) yields the per-step
    stream's batches, from any start step (a resumed run) and with workers."""
    from lit_loops.data import OnTheFlyBatches, stream_loader
    from lit_loops.experiments.sequences.data import MultiStepBatches

    dm = sequence_data(variable_length=True)
    loader = dm.train_dataloader()
    assert isinstance(loader.dataset, MultiStepBatches) and loader.dataset.steps_per_call == 8

    def take(stream, n, workers=0):
        batches = iter(stream_loader(stream, workers))
        return [next(batches) for _ in range(n)]

    one_step = take(OnTheFlyBatches(dm.batch_maker(), seed=3), 20)
    assert_same_batches(take(loader.dataset, 20), one_step)
    resumed = MultiStepBatches(dm.batch_maker(), seed=3, start_step=5)
    assert_same_batches(take(resumed, 15), one_step[5:])
    assert_same_batches(take(MultiStepBatches(dm.batch_maker(), seed=3), 20, workers=2), one_step)


def test_generation_time_divides_a_multi_step_call_by_its_steps(in_tmp):
    from benchmarks.data_generation import build, generation_s

    times = generation_s(build(["sequences/cpu.yaml"]), calls=4)
    assert len(times) == 5 and all(t > 0 for t in times)  # at least 5 calls of 8 steps


# -- compile rows and the GPU section ----------------------------------------------------


def test_the_warm_up_beyond_steady_steps_is_the_compile_time():
    step, compile_s = steady_and_warmup([5.0, 2.0, 1.0, 1.1, 0.9], warmup=2)
    assert step == 1.0 and compile_s == pytest.approx(5.0)
    assert steady_and_warmup([0.9, 1.0, 1.0], warmup=1) == (1.0, 0.0)  # never negative


def test_compile_times_are_the_first_repeat_and_the_cached_ones():
    times = compile_times([{"compile_s": 30.0}, {"compile_s": 2.0}, {"compile_s": 4.0}])
    assert times == {"empty_cache": 30.0, "cached": {"median": 3.0, "min": 2.0, "max": 4.0}}
    assert fmt_compile(times) == "30.0 s (cached: 3.0)"
    assert fmt_compile(compile_times([{"compile_s": 9.0}])) == "9.0 s" and fmt_compile(None) == ""


def test_a_compiled_measurement_gets_an_empty_compile_cache(monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    folder = fresh_compile_cache()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == folder and not os.listdir(folder)


def test_every_paper_config_is_in_the_gpu_section():
    configs = gpu.paper_configs()
    assert "icl/paper+paper_looped.yaml" in configs and "block_recurrent/enwik8.yaml" in configs
    assert all("cpu" not in c for c in configs) and len(configs) >= 5


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine without a GPU")
def test_without_a_gpu_the_section_says_so_and_keeps_earlier_figures():
    out = gpu.run()
    assert out == {"available": False} and "No GPU" in gpu.markdown(out)
    earlier = {"available": True, "configs": {}, "_when": "then"}
    assert keeps_previous(earlier, out) and not keeps_previous({"available": False}, out)
    assert not keeps_previous(None, out) and not keeps_previous(earlier, {"available": True})


def test_the_gpu_measurement_runs_on_the_cpu_and_renders(in_tmp):
    r = gpu.step_rate("oocl/cpu.yaml", device="cpu", steps=2, warmup=1)
    assert r["steps_per_s"] > 0 and r["steps"] == 2 and r["peak_mb"] is None
    out = {"available": True, "device": "test", "precision": gpu.PRECISION, "budget_s": 540,
           "wall_s": 1, "configs": {"oocl/cpu.yaml": {"eager": r, "compiled": {"error": "E"}},
                                    "oocl/paper.yaml": {"skipped": "timed out after 240 s"}}}  # fmt: skip
    text = gpu.markdown(out)
    assert (
        "| oocl/cpu.yaml | 256 |" in text and "failed: E" in text and "skipped: timed out" in text
    )
