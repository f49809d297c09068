import torch

from lit_loops.data import OnTheFlyBatches, batch_seed, stream_loader


def make(g: torch.Generator, step: int) -> torch.Tensor:
    return torch.randint(1_000_000, (4,), generator=g)


def take(loader, n):
    it = iter(loader)
    return torch.stack([next(it) for _ in range(n)])


def test_stream_is_the_same_whatever_the_number_of_workers():
    one = take(stream_loader(OnTheFlyBatches(make, seed=1)), 8)
    two = take(stream_loader(OnTheFlyBatches(make, seed=1), num_workers=2), 8)
    torch.testing.assert_close(one, two)
    assert len({tuple(row.tolist()) for row in one}) == 8  # no batch repeats


def test_ranks_and_seeds_draw_different_streams():
    base = take(stream_loader(OnTheFlyBatches(make, seed=1, rank=0)), 4)
    other_rank = take(stream_loader(OnTheFlyBatches(make, seed=1, rank=1)), 4)
    other_seed = take(stream_loader(OnTheFlyBatches(make, seed=2, rank=0)), 4)
    assert not torch.equal(base, other_rank)
    assert not torch.equal(base, other_seed)


def test_start_step_continues_the_stream():
    full = take(stream_loader(OnTheFlyBatches(make, seed=3)), 6)
    resumed = take(stream_loader(OnTheFlyBatches(make, seed=3, start_step=4)), 2)
    torch.testing.assert_close(full[4:], resumed)


def test_batch_seed_separates_its_inputs():
    seeds = {batch_seed(s, r, t) for s in range(3) for r in range(3) for t in range(3)}
    assert len(seeds) == 27
