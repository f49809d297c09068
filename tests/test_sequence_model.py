"""The sequence model: embeddings, the distance-weighted loss, KV-cached generation."""

from __future__ import annotations

import math

import pytest
import torch

from lit_loops.experiments.sequences.model import SequenceModel
from lit_loops.experiments.sequences.module import (
    RANDOM_DISTANCE,
    SequenceModule,
    sequence_loss,
)
from lit_loops.nn import KVCache, TransformerConfig


def model(embedding: str = "tuple", d_model: int = 16, max_len: int = 8) -> SequenceModel:
    torch.manual_seed(0)
    cfg = TransformerConfig(
        vocab_size=256, max_seq_len=max_len, d_model=d_model, n_layers=2,
        n_heads=1 if d_model % 2 else 2, d_mlp=32,
        activation="gelu",
    )  # fmt: skip
    return SequenceModel(cfg, embedding).eval()


# --- embeddings ----------------------------------------------------------------------------
def test_tuple_embedding_is_value_and_position_over_their_maxima():
    m = model("tuple", d_model=2)  # the document's setting: the tuple is the residual stream
    e = m.embed(torch.tensor([[0, 255, 51]]))
    assert torch.allclose(e, torch.tensor([[[0.0, 0.0], [1.0, 1 / 7], [0.2, 2 / 7]]]))


def test_binary_embedding_holds_the_bits_msb_first():
    m = model("binary", d_model=9)
    e = m.embed(torch.tensor([[5]]))
    assert e[0, 0, :8].tolist() == [-1, -1, -1, -1, -1, 1, -1, 1]  # 00000101


@pytest.mark.parametrize("embedding", ["tuple", "learned", "binary"])
def test_every_embedding_gives_causal_logits(embedding):
    m = model(embedding)
    tokens = torch.randint(0, 256, (3, 8))
    logits = m(tokens)
    assert logits.shape == (3, 8, 256)
    changed = tokens.clone()
    changed[:, 5:] = (changed[:, 5:] + 7) % 256
    assert torch.allclose(m(changed)[:, :5], logits[:, :5], atol=1e-5)


# --- loss ------------------------------------------------------------------------------------
def peaked(at: torch.Tensor, height: float = 20.0) -> torch.Tensor:
    """Logits (B, T, 256) with all the mass on ``at`` (B, T)."""
    return torch.nn.functional.one_hot(at, 256).float() * height


def test_distance_weight_multiplies_cross_entropy_by_one_plus_alpha_w():
    target = torch.tensor([[10, 10]])
    logits = peaked(torch.tensor([[100, 11]]))
    valid = torch.ones(1, 2, dtype=torch.bool)
    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")
    for weight, w in (("linear", [90, 1]), ("quadratic", [8100, 1]), ("sqrt", [90**0.5, 1])):
        got = sequence_loss(logits, target, valid, alpha=0.1, distance_weight=weight)
        expected = (ce * (1 + 0.1 * torch.tensor([w]))).mean()
        assert torch.allclose(got, expected, rtol=1e-4), weight
    plain = sequence_loss(logits, target, valid, loss="cross_entropy")
    assert torch.allclose(plain, ce.mean())


def test_distance_from_expected_value_or_argmax():
    target = torch.tensor([[0]])
    logits = torch.full((1, 1, 256), -1e9)
    logits[0, 0, 10], logits[0, 0, 30] = 0.0, math.log(3)  # p = 1/4 at 10, 3/4 at 30
    valid = torch.ones(1, 1, dtype=torch.bool)
    base = sequence_loss(logits, target, valid, loss="cross_entropy")
    expected = sequence_loss(logits, target, valid, distance_from="expected", alpha=1.0)
    argmax = sequence_loss(logits, target, valid, distance_from="argmax", alpha=1.0)
    assert torch.allclose(expected / base, torch.tensor(1 + 25.0))  # E = 2.5 + 22.5
    assert torch.allclose(argmax / base, torch.tensor(1 + 30.0))


def test_position_handling_all_last_weighted_and_padding():
    target = torch.tensor([[1, 2, 3]])
    logits = peaked(torch.tensor([[1, 2, 9]]), height=5.0)  # only the last is wrong
    valid = torch.tensor([[True, True, True]])
    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")[0]
    kw = dict(loss="cross_entropy")
    assert torch.allclose(sequence_loss(logits, target, valid, positions="all", **kw), ce.mean())
    assert torch.allclose(sequence_loss(logits, target, valid, positions="last", **kw), ce[2])
    weighted = (ce * torch.tensor([1.0, 2, 3])).sum() / 6
    assert torch.allclose(
        sequence_loss(logits, target, valid, positions="weighted", **kw), weighted
    )
    padded = torch.tensor([[True, True, False]])  # padding never counts
    assert torch.allclose(sequence_loss(logits, target, padded, **kw), ce[:2].mean())
    assert torch.allclose(sequence_loss(logits, target, padded, positions="last", **kw), ce[1])


def test_random_baselines():
    assert abs(RANDOM_DISTANCE - 85.33) < 0.01


# --- generation --------------------------------------------------------------------------------
def test_kv_cache_matches_a_full_pass():
    m = model("learned")
    tokens = torch.randint(0, 256, (2, 8))
    full = m(tokens)
    cache = KVCache(2)
    parts = [m(tokens[:, :3], cache, start=0)]
    for t in range(3, 8):
        parts.append(m(tokens[:, t : t + 1], cache, start=t))
    assert torch.allclose(torch.cat(parts, 1), full, atol=1e-5)


@pytest.mark.parametrize("strategy", ["greedy", "beam", "sample"])
@pytest.mark.parametrize("new", [3, 12])  # within the positions, and sliding past them
def test_cached_generation_equals_uncached(strategy, new):
    m = model("tuple")
    prompt = torch.randint(0, 256, (3, 4))
    kw = dict(strategy=strategy, beams=3, temperature=0.8)
    cached = m.generate(prompt, new, generator=torch.Generator().manual_seed(1), **kw)
    plain = m.generate(
        prompt, new, generator=torch.Generator().manual_seed(1), use_cache=False, **kw
    )
    assert cached.shape == (3, 4 + new)
    assert torch.equal(cached, plain)
    assert torch.equal(cached[:, :4], prompt)


def test_greedy_picks_the_argmax_and_beam_width_one_is_greedy():
    m = model("tuple")
    prompt = torch.randint(0, 256, (2, 5))
    out = m.generate(prompt, 1)
    assert torch.equal(out[:, -1], m(prompt)[:, -1].argmax(-1))
    assert torch.equal(m.generate(prompt, 4, strategy="beam", beams=1), m.generate(prompt, 4))


def test_beam_search_finds_a_better_total_than_greedy_or_ties():
    m = model("learned")
    prompt = torch.randint(0, 256, (8, 3))

    def total_logp(seq):
        logp = torch.log_softmax(m(seq[:, :-1]), -1)
        picked = logp.gather(2, seq[:, 1:, None]).squeeze(-1)[:, 2:]  # the generated terms
        return picked.sum(1)

    greedy = m.generate(prompt, 4)
    beam = m.generate(prompt, 4, strategy="beam", beams=4)
    assert (total_logp(beam) >= total_logp(greedy) - 1e-4).all()


def test_bad_generation_arguments_fail_clearly():
    m = model("tuple")
    with pytest.raises(ValueError, match="strategy='topk' is invalid"):
        m.generate(torch.zeros(1, 2, dtype=torch.long), 2, strategy="topk")
    with pytest.raises(ValueError, match="prompt=.*at most max_len=8"):
        m.generate(torch.zeros(1, 9, dtype=torch.long), 2)


def test_module_checks_its_arguments():
    args = dict(max_len=8, family_names=["constant"], family_phases=[1])
    with pytest.raises(ValueError, match="distance_weight='cubic' is invalid"):
        SequenceModule(**args, distance_weight="cubic")
    with pytest.raises(ValueError, match="embedding='onehot' is invalid"):
        SequenceModule(**args, embedding="onehot")
    with pytest.raises(ValueError, match="family_names=None"):
        SequenceModule(max_len=8)
    assert SequenceModule(**args, activation="swish").num_parameters > 0
