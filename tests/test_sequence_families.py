"""Sequence families of the sequences experiment (seed 002): each against hand-written
sequences (the design document's examples), then range, determinism, variety, resampling,
the banks behind ``sample_mixture`` and the mixture itself."""

from __future__ import annotations

import pytest
import torch

from lit_loops.experiments.sequences import (
    FAMILIES,
    GEOMETRIC_RATIOS,
    MIXED_PATTERNS,
    PHASES,
    RATIONAL_PAIRS,
    Family,
    family_bank,
    generate,
    generate_rows,
    sample_mixture,
)

PAIR_HALF_THREE_HALVES = RATIONAL_PAIRS.index(((1, 2), (3, 2)))


def ratio(n: int, d: int) -> int:
    return GEOMETRIC_RATIOS.index((n, d))


def terms_of(name: str, params: dict[str, int], length: int) -> list[int]:
    """One sequence of ``name`` from fixed parameters, brought into range as ``generate``."""
    fam = FAMILIES[name]
    x = fam.terms({k: torch.tensor([v]) for k, v in params.items()}, length)
    assert x.dtype == torch.int64 and x.shape == (1, length)
    return (x % 256 if fam.range_rule == "mod256" else x)[0].tolist()


@pytest.mark.parametrize(
    "name, params, expected",
    [
        # phase 1
        ("constant", {"a": 1}, [1, 1, 1, 1]),
        ("arithmetic_up", {"a": 2, "s": 2, "d": 1}, [2, 4, 6, 8]),
        ("arithmetic_down", {"a": 10, "s": 3, "d": -1}, [10, 7, 4, 1]),
        ("alternating", {"a": 1, "b": 0}, [1, 0, 1, 0, 1]),
        ("fibonacci_like", {"p": 1, "q": 1, "x0": 1, "x1": 1},
         [1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377 % 256]),
        ("fibonacci_like", {"p": 2, "q": 1, "x0": 0, "x1": 1}, [0, 1, 2, 5, 12, 29, 70, 169, 408 % 256]),
        # phase 2
        ("alternating_steps", {"a": 1, "s1": 2, "s2": 1, "d": 1}, [1, 3, 4, 6, 7, 9]),
        ("alternating_steps", {"a": 9, "s1": 1, "s2": 2, "d": -1}, [9, 8, 6, 5, 3]),
        ("growing_steps", {"a": 1, "s": 1, "c": 1, "d": 1}, [1, 2, 4, 7, 11]),
        ("growing_steps", {"a": 20, "s": 1, "c": 2, "d": -1}, [20, 19, 16, 11]),
        ("shrinking_steps", {"a": 1, "s": 4, "c": 1, "d": 1}, [1, 5, 8, 10, 11, 11, 10, 8]),
        ("geometric", {"a": 2, "r": 2}, [2, 4, 8, 16]),
        ("geometric", {"a": 3, "r": 3}, [3, 9, 27, 81, 243, 729 % 256]),
        ("alternating_factors", {"a": 1, "f1": 2, "f2": 3}, [1, 2, 6, 12, 36]),
        ("rational_factors", {"a": 8, "pair": PAIR_HALF_THREE_HALVES},
         [8, 4, 6, 3, 4, 2, 3, 1, 1, 0]),
        ("two_step", {"a": 1, "s": 1, "d": 1, "k": 0}, [1, 1, 2, 2, 3, 3]),
        ("two_step", {"a": 1, "s": 1, "d": 1, "k": 1}, [1, 2, 2, 3, 3, 4]),
        ("three_step", {"a": 1, "s": 1, "d": 1, "k": 0}, [1, 1, 1, 2, 2, 2]),
        ("three_step", {"a": 9, "s": 2, "d": -1, "k": 2}, [9, 7, 7, 7, 5]),
        ("mixed_periods", {"a": 1, "s": 1, "d": 1, "pattern": 0, "k": 0},
         [1, 2, 2, 3, 4, 4, 5, 6, 6]),
        ("mixed_periods", {"a": 1, "s": 1, "d": 1, "pattern": 0, "k": 1},
         [1, 1, 2, 3, 3, 4, 5, 5, 6]),
        ("mixed_periods", {"a": 0, "s": 2, "d": 1, "pattern": 2, "k": 0},
         [0, 0, 2, 2, 2, 4, 4, 6, 6, 6]),
        # phase 3
        ("fibonacci_mod", {"m": 3, "x0": 0, "x1": 1}, [0, 1, 1, 2, 0, 2, 2, 1, 0, 1]),
        ("fibonacci_mod", {"m": 10, "x0": 5, "x1": 8}, [5, 8, 3, 1, 4, 5, 9, 4]),
        ("double_every_third", {"a": 1, "s": 1, "d": 1, "k": 0}, [1, 2, 6, 4, 5, 12, 7, 8, 18]),
        ("double_every_third", {"a": 10, "s": 2, "d": -1, "k": 2}, [20, 8, 6, 8, 2]),
        ("floor_geometric", {"a": 8, "ratio": ratio(3, 2)}, [8, 12, 18, 27, 40]),
        ("floor_geometric", {"a": 100, "ratio": ratio(3, 4)}, [100, 75, 56, 42, 31]),
        # 9 (4/3)^2 = 16 exactly: a float computation could floor it to 15
        ("floor_geometric", {"a": 9, "ratio": ratio(4, 3)}, [9, 12, 16, 21, 28]),
        ("ceil_geometric", {"a": 100, "ratio": ratio(3, 4)}, [100, 75, 57, 43, 32]),
        ("ceil_geometric", {"a": 9, "ratio": ratio(4, 3)}, [9, 12, 16, 22, 29]),
        ("alternating_sign_arithmetic", {"a": 1, "s": 1, "d": 1, "k": 0}, [129, 126, 131, 124]),
        ("alternating_sign_arithmetic", {"a": 3, "s": 1, "d": -1, "k": 1}, [125, 130, 127, 128]),
        ("parity_rule", {"a": 1}, [1, 2, 3, 6, 7, 14, 15, 30]),
        ("parity_rule", {"a": 200}, [200, 201, 402 % 256, 147, 294 % 256]),
        ("switch_rule", {"x0": 3, "x1": 5}, [3, 5, 2, 7, 5, 12, 7, 19, 12, 31]),
        ("switch_rule", {"x0": 100, "x1": 200},
         [100, 200, 100, 44, 144, 100, 244, 144, 132, 20, 152, 132]),
    ],
)  # fmt: skip
def test_families_match_hand_written_sequences(name, params, expected):
    assert terms_of(name, params, len(expected)) == expected


def test_every_phase_has_its_families():
    assert PHASES == {
        1: ["constant", "arithmetic_up", "arithmetic_down", "alternating", "fibonacci_like"],
        2: ["alternating_steps", "growing_steps", "shrinking_steps", "geometric",
            "alternating_factors", "rational_factors", "two_step", "three_step",
            "mixed_periods"],
        3: ["fibonacci_mod", "double_every_third", "floor_geometric", "ceil_geometric",
            "alternating_sign_arithmetic", "parity_rule", "switch_rule"],
    }  # fmt: skip
    for name, fam in FAMILIES.items():
        assert fam.name == name and name in PHASES[fam.phase] and fam.doc
        assert fam.params is not None and fam.terms is not None and fam.support is not None


@pytest.mark.parametrize("length", [1, 2, 9, 17, 23])  # 23: the longest growing_steps fits
def test_every_family_is_in_range_with_the_right_shape(length):
    for name, fam in FAMILIES.items():
        g = torch.Generator().manual_seed(length)
        x = generate(name, g, 64, length)
        assert x.dtype == torch.int64 and x.shape == (64, length), name
        assert int(x.min()) >= 0 and int(x.max()) <= 255, name
        if fam.range_rule == "exact":  # in range by construction, not by generate
            raw = fam.fn(torch.Generator().manual_seed(1), 256, length)
            assert int(raw.min()) >= 0 and int(raw.max()) <= 255, name


@pytest.mark.parametrize("name", list(FAMILIES))
def test_families_are_deterministic_varied_and_split_in_params_and_terms(name):
    fam = FAMILIES[name]
    x = generate(name, torch.Generator().manual_seed(0), 64, 9)
    assert torch.equal(x, generate(name, torch.Generator().manual_seed(0), 64, 9))
    assert not torch.equal(x, generate(name, torch.Generator().manual_seed(1), 64, 9))
    assert len(torch.unique(x, dim=0)) >= 10  # not all rows alike
    params = fam.params(torch.Generator().manual_seed(0), 64, 9)
    assert all(v.dtype == torch.int64 and v.shape == (64,) for v in params.values())
    assert torch.equal(fam.terms(params, 9), fam.fn(torch.Generator().manual_seed(0), 64, 9))


@pytest.mark.parametrize("name", ["two_step", "three_step", "mixed_periods",
                                  "double_every_third", "alternating_sign_arithmetic"])  # fmt: skip
def test_periodic_families_start_anywhere_in_their_cycle(name):
    k = FAMILIES[name].params(torch.Generator().manual_seed(0), 500, 17)["k"]
    period = {"two_step": 2, "three_step": 3, "double_every_third": 3}.get(name, 2)
    if name == "mixed_periods":
        period = max(sum(p) for p in MIXED_PATTERNS)
    assert set(k.tolist()) == set(range(period))


def test_support_lists_every_draw_with_its_probability():
    for name, fam in FAMILIES.items():
        params, prob = fam.support(9)
        keys = sorted(params)
        listed = set(map(tuple, torch.stack([params[k] for k in keys], 1).tolist()))
        assert len(listed) == len(prob), name  # no parameter set twice
        torch.testing.assert_close(prob.sum(), torch.tensor(1.0, dtype=torch.float64))
        drawn = fam.params(torch.Generator().manual_seed(0), 200, 9)
        assert set(map(tuple, torch.stack([drawn[k] for k in keys], 1).tolist())) <= listed, name


def test_sampling_from_the_banks_matches_generate():
    """Per family, the bank draw and generate agree on the means of the first and last terms
    and of the first step's size (a mistake in the probabilities moves them by far more)."""
    n = 3000

    def stats(x: torch.Tensor) -> torch.Tensor:  # (n, L) -> (n, 3)
        x = x.double()
        return torch.stack([x[:, 0], x[:, -1], (x[:, 1] - x[:, 0]).abs()], 1)

    for name in FAMILIES:
        direct = stats(generate(name, torch.Generator().manual_seed(0), n, 17))
        banked = stats(sample_mixture(torch.Generator().manual_seed(1), [name], None, n, 17)[0])
        error = ((direct.var(0) + banked.var(0)) / n).sqrt()  # of the difference of the means
        gap = (direct.mean(0) - banked.mean(0)).abs()
        assert bool((gap <= 5 * error + 1e-9).all()), (name, gap, error)


def test_bank_steps_are_uniform_like_generate():
    # arithmetic_up at L = 17 draws its step uniformly in 1..15 (then the start), not its
    # (step, start) pairs uniformly, which would favour small steps 15 to 1
    x, _ = sample_mixture(torch.Generator().manual_seed(0), ["arithmetic_up"], None, 15000, 17)
    share = torch.bincount(x[:, 1] - x[:, 0], minlength=16)[1:] / 15000
    torch.testing.assert_close(share, torch.full((15,), 1 / 15), atol=0.01, rtol=0)
    seqs, cdf = family_bank("arithmetic_up", 17)
    assert seqs.dtype == torch.uint8 and len(seqs) == len(cdf) and float(cdf[-1]) == 1.0


def _noisy_family(calls: list[int]) -> Family:
    """60 % of rows shifted out of range by 256."""

    def fn(g: torch.Generator, batch: int, length: int) -> torch.Tensor:
        calls.append(batch)
        x = torch.randint(256, (batch, length), generator=g)
        return x + 256 * (torch.rand(batch, generator=g) < 0.6).long().unsqueeze(1)

    return Family("noisy", 1, "resample", "test family", fn)


def test_resample_redraws_out_of_range_rows():
    calls: list[int] = []
    x = generate(_noisy_family(calls), torch.Generator().manual_seed(0), 500, 6)
    assert x.shape == (500, 6) and int(x.min()) >= 0 and int(x.max()) <= 255
    assert calls[0] == 500 and len(calls) > 2 and calls[1] < 500  # only the bad rows redrawn
    y = generate(_noisy_family([]), torch.Generator().manual_seed(0), 500, 6)
    assert torch.equal(x, y)


def test_resample_gives_up_with_a_clear_error():
    broken = Family("broken", 2, "resample", "always 300", lambda g, b, n: torch.full((b, n), 300))
    with pytest.raises(RuntimeError, match="family 'broken'.*outside 0..255 after 100 rounds"):
        generate(broken, torch.Generator().manual_seed(0), 4, 5)


def test_mod256_brings_negative_terms_into_range():
    fam = Family("neg", 3, "mod256", "", lambda g, b, n: torch.full((b, n), -1))
    assert generate(fam, torch.Generator(), 2, 3).tolist() == [[255] * 3] * 2


@pytest.mark.parametrize(
    "kwargs, match",
    [({"phase": 4}, "phase=4"), ({"range_rule": "clip"}, "range_rule='clip'")],
)
def test_bad_families_are_rejected(kwargs, match):
    args = {"name": "x", "phase": 1, "range_rule": "exact", "doc": "", "fn": None}
    with pytest.raises(ValueError, match=match):
        Family(**{**args, **kwargs})


def test_exact_families_refuse_lengths_they_cannot_fit():
    match = "'growing_steps': no parameters keep .* length 24"
    with pytest.raises(ValueError, match=match):
        generate("growing_steps", torch.Generator(), 4, 24)
    with pytest.raises(ValueError, match=match):
        sample_mixture(torch.Generator(), ["constant", "growing_steps"], None, 4, 24)


@pytest.mark.parametrize("bank", [True, False])
def test_mixture_follows_the_weights_and_labels_rows(bank):
    names = ["constant", "arithmetic_up", "alternating"]
    g = torch.Generator().manual_seed(0)
    seqs, index = sample_mixture(g, names, [1.0, 3.0, 0.0], 8000, 9, bank=bank)
    assert seqs.shape == (8000, 9) and seqs.dtype == torch.int64 and index.shape == (8000,)
    share = torch.bincount(index, minlength=3) / 8000
    torch.testing.assert_close(share, torch.tensor([0.25, 0.75, 0.0]), atol=0.02, rtol=0)
    steps = seqs.diff(dim=1)
    assert bool((steps[index == 0] == 0).all())  # constant rows
    up = steps[index == 1]
    assert bool(((up > 0) & (up == up[:, :1])).all())  # arithmetic rows
    _, index = sample_mixture(g, names, None, 6000, 9, bank=bank)
    share = torch.bincount(index, minlength=3) / 6000
    torch.testing.assert_close(share, torch.full((3,), 1 / 3), atol=0.02, rtol=0)


@pytest.mark.parametrize("bank", [True, False])
def test_rows_of_given_families(bank):
    family = torch.tensor([1, 0, 0, 1, 1, 0, 1])
    seqs = generate_rows(
        torch.Generator().manual_seed(0), ["constant", "arithmetic_up"], family, 9, bank
    )
    again = generate_rows(
        torch.Generator().manual_seed(0), ["constant", "arithmetic_up"], family, 9, bank
    )
    assert seqs.shape == (7, 9) and seqs.dtype == torch.int64 and torch.equal(seqs, again)
    steps = seqs.diff(dim=1)
    assert bool((steps[family == 0] == 0).all()) and bool((steps[family == 1] > 0).all())


@pytest.mark.parametrize("bank", [True, False])
def test_mixture_of_all_families_is_deterministic_and_in_range(bank):
    names = list(FAMILIES)

    def draw(seed: int):
        return sample_mixture(torch.Generator().manual_seed(seed), names, None, 256, 17, bank=bank)

    (x, i), (y, j) = draw(0), draw(0)
    assert torch.equal(x, y) and torch.equal(i, j) and not torch.equal(x, draw(1)[0])
    assert int(x.min()) >= 0 and int(x.max()) <= 255 and set(i.tolist()) == set(range(len(names)))


@pytest.mark.parametrize(
    "names, weights, match",
    [(["nope"], None, "unknown family 'nope'"), ([], None, "at least one family"),
     (["constant"], [1.0, 2.0], "weights=.* is invalid"),
     (["constant", "geometric"], [1.0, -1.0], "weights=.* is invalid"),
     (["constant", "geometric"], [0.0, 0.0], "weights=.* is invalid")],
)  # fmt: skip
def test_bad_mixtures_are_rejected(names, weights, match):
    with pytest.raises(ValueError, match=match):
        sample_mixture(torch.Generator(), names, weights, 4, 5)
