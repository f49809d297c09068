"""The sequence model: embeddings, the distance-weighted loss, KV-cached generation."""

from __future__ import annotations

import math
import re

import pytest
import torch

from lit_loops.experiments.sequences.model import ValueFeatures, sequence_model
from lit_loops.experiments.sequences.module import (
    RANDOM_DISTANCE,
    SequenceModule,
    sequence_loss,
)
from lit_loops.nn import TokenReadIn, TransformerConfig, TransformerWrapper


def model(embedding: str = "tuple", d_model: int = 16, max_len: int = 8) -> TransformerWrapper:
    torch.manual_seed(0)
    cfg = TransformerConfig(
        d_model=d_model, n_layers=2, n_heads=1 if d_model % 2 else 2, d_mlp=32,
        activation="gelu",
    )  # fmt: skip
    return sequence_model(cfg, max_len, embedding).eval()


# --- embeddings ----------------------------------------------------------------------------
def test_tuple_embedding_is_value_and_position_over_their_maxima():
    m = model("tuple", d_model=2)  # the document's setting: the tuple is the residual stream
    assert isinstance(m.read_in, ValueFeatures) and isinstance(m.read_in.proj, torch.nn.Identity)
    e = m.read_in(torch.tensor([[0, 255, 51]]))
    assert torch.allclose(e, torch.tensor([[[0.0, 0.0], [1.0, 1 / 7], [0.2, 2 / 7]]]))


def test_binary_embedding_holds_the_bits_msb_first():
    m = model("binary", d_model=9)
    e = m.read_in(torch.tensor([[5]]))
    assert e[0, 0, :8].tolist() == [-1, -1, -1, -1, -1, 1, -1, 1]  # 00000101


def test_learned_embedding_is_a_token_table_with_positions():
    m = model("learned")
    assert isinstance(m.read_in, TokenReadIn) and m.read_in.tok_emb.num_embeddings == 256
    assert m.max_len == 8


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
    cache = m.new_cache()
    parts = [m(tokens[:, :3], cache=cache, start=0)]
    for t in range(3, 8):
        parts.append(m(tokens[:, t : t + 1], cache=cache, start=t))
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


ARGS = dict(max_len=8, family_names=["constant"], family_phases=[1])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"distance_weight": "cubic"}, "distance_weight='cubic' is invalid"),
        (
            {"embedding": "onehot"},
            re.escape(
                "embedding='onehot' is invalid: must be one of ['tuple', 'learned', 'binary']"
            ),
        ),
        ({"loss": "mse"}, "loss='mse' is invalid"),
        ({"alpha": -1.0}, "alpha=-1.0 is invalid"),
        ({"positions": "first"}, "positions='first' is invalid"),
        (
            {"net": {"d_model": 2, "n_heads": 4}},
            re.escape("net.n_heads=4 is invalid: must divide net.d_model=2"),
        ),
        ({"net": {"activation": "tanh"}}, "net.activation='tanh' is invalid"),
        ({"optim": {"min_lr": 1.0}}, r"optim.min_lr=1.0 is invalid: .*\[0.0, 0.001\]"),
        ({"max_len": None}, "max_len=None is invalid: is set from the DataModule"),
        ({"family_phases": None}, "family_names=.* is invalid: is set from the DataModule"),
    ],
)
def test_module_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SequenceModule(**{**ARGS, **kwargs})


def test_module_builds_its_net_from_a_partial_dict():
    with pytest.raises(ValueError, match="family_names=None"):
        SequenceModule(max_len=8)
    module = SequenceModule(**ARGS, net={"activation": "swish", "d_mlp": 16})
    assert module.num_parameters > 0
    # the other fields keep the module's defaults (the document's d_model = 2)
    assert (module.net.d_model, module.net.d_mlp, module.net.activation) == (2, 16, "swish")
    assert module.hparams.net["d_mlp"] == 16 and module.hparams.optim["warmup_steps"] == 5000
    assert module.model.stack.blocks[0].mlp.up.out_features == 16


def test_module_generates_through_the_sample_interface():
    """The interface of GenerateSample: a prompt from a batch, its continuation, text."""
    torch.manual_seed(0)
    module = SequenceModule(**ARGS, net={"d_model": 8, "n_heads": 2})
    batch = {"seq": torch.randint(0, 256, (3, 9))}
    prompt = module.sample_prompt(batch, 20)
    assert torch.equal(prompt, batch["seq"][:1, :7])  # at most the window (max_len - 1)
    out = module.generate(prompt, 5, strategy="greedy")
    assert out.shape == (1, 12) and torch.equal(out[:, :7], prompt)
    assert torch.equal(out, module.model.generate(prompt, 5))
    assert module.decode([1, 2, 255]) == "1 2 255"
