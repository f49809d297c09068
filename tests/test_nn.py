"""lit_loops.nn: the one layer stack, read-ins, the wrapper and sampling; one tiny test per
option, x-transformers style."""

import pytest
import torch
from torch import nn

from lit_loops.nn import (
    Block,
    CachedDecoder,
    LayerStack,
    SelfAttention,
    TokenReadIn,
    TransformerConfig,
    TransformerWrapper,
    VectorReadIn,
    generate,
    num_parameters,
    sample_next,
)

V, T, D = 17, 8, 16


def cfg(**kw) -> TransformerConfig:
    return TransformerConfig(**{"d_model": D, "n_layers": 2, "n_heads": 4, "d_mlp": 32, **kw})


def token_model(causal: bool = True, tie: bool = False, loops: int = 1, **kw):
    torch.manual_seed(0)
    c = cfg(**kw)
    return TransformerWrapper(
        TokenReadIn(V, D, T),
        LayerStack(c, causal=causal, loops=loops),
        nn.Linear(D, V, bias=False),
        tie_embeddings=tie,
    )


# --- the config ---------------------------------------------------------------------------
def test_d_mlp_defaults_to_four_times_the_width_and_follows_it():
    assert cfg(d_mlp=None).mlp_width == 4 * D
    assert TransformerConfig(d_model=8).mlp_width == 32  # derived, not frozen at the default
    assert cfg(d_mlp=None).d_mlp is None


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"n_heads": 3}, "net.n_heads=3 is invalid: must divide net.d_model=16"),
        ({"d_model": 0}, "net.d_model=0 is invalid"),
        ({"d_mlp": 0}, "net.d_mlp=0 is invalid"),
        ({"norm": "rms"}, "net.norm='rms' is invalid: must be one of"),
        ({"activation": "tanh"}, "net.activation='tanh' is invalid"),
        ({"dropout": 1.0}, "net.dropout=1.0 is invalid"),
    ],
)
def test_config_rejects_bad_values(bad, match):
    with pytest.raises(ValueError, match=match):
        cfg(**bad)


# --- the stack ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "options",
    [{}, {"attn_only": True}, {"norm": "none"}, {"activation": "gelu"}, {"n_layers": 1},
     {"bias": False}, {"dropout": 0.1}],
)  # fmt: skip
def test_token_model_shapes(options):
    logits = token_model(**options)(torch.randint(V, (3, T)))
    assert logits.shape == (3, T, V)
    assert torch.isfinite(logits).all()


def test_attention_only_has_no_mlp():
    full, attn_only = token_model(), token_model(attn_only=True)
    assert attn_only.num_parameters() < full.num_parameters()
    assert all(block.mlp is None for block in attn_only.stack.blocks)


def test_num_parameters_counts_tied_weights_once():
    untied, tied = token_model(), token_model(tie=True)
    assert untied.num_parameters() - tied.num_parameters() == V * D
    assert tied.head.weight is tied.read_in.tok_emb.weight
    assert num_parameters(tied) == tied.num_parameters()


@pytest.mark.parametrize("causal", [True, False])
def test_the_mask_hides_the_future_only_when_causal(causal):
    model = token_model(causal=causal).eval()
    x = torch.randint(V, (2, T))
    y = x.clone()
    y[:, 5:] = (y[:, 5:] + 1) % V  # change only positions 5..7
    a, b = model(x), model(y)
    assert torch.allclose(a[:, :5], b[:, :5], atol=1e-6) == causal
    assert not torch.allclose(a[:, 5:], b[:, 5:])


def test_bidirectional_attention_sees_the_future():
    torch.manual_seed(0)
    attn = SelfAttention(16, 4, causal=False).eval()
    x = torch.randn(1, 6, 16)
    y = x.clone()
    y[:, -1] += 1.0
    assert not torch.allclose(attn(x)[:, 0], attn(y)[:, 0])


@pytest.mark.parametrize(
    "options",
    [{}, {"attn_only": True}, {"n_layers": 1}, {"causal": False}, {"tie": True}],
)
def test_last_only_gives_the_last_positions_logits(options):
    """The shortcut for models read at one position: the same logits, gradients too."""
    model = token_model(**options)
    tokens = torch.randint(V, (3, 5))
    full = model(tokens)[:, -1]
    last = model(tokens, last_only=True)
    assert last.shape == (3, 1, V)
    assert torch.allclose(last[:, 0], full, atol=1e-6)
    weight = model.stack.blocks[0].attn.qkv.weight
    (g_full,) = torch.autograd.grad(full.square().sum(), weight)
    (g_last,) = torch.autograd.grad(last.square().sum(), weight)
    assert torch.allclose(g_full, g_last, atol=1e-5)


def test_looped_stack_is_input_injection_around_the_blocks():
    torch.manual_seed(0)
    stack = LayerStack(cfg(), causal=False, loops=3).eval()
    e = torch.randn(2, T, D)

    def blocks(z):
        for block in stack.blocks:
            z = block(z)
        return z

    one = blocks(e)  # z_1 = f(0 + e): the plain stack
    torch.testing.assert_close(stack(e, loops=1), one)
    torch.testing.assert_close(stack(e, loops=2), blocks(one + e))
    torch.testing.assert_close(stack(e), stack(e, loops=3))  # the default loop count
    assert not torch.allclose(stack(e, loops=2), stack(e, loops=3))


def test_looped_weights_do_not_depend_on_loops():
    counts = {num_parameters(LayerStack(cfg(), loops=k)) for k in (1, 4, 8)}
    assert counts == {2 * num_parameters(Block(cfg()))}
    with pytest.raises(ValueError, match="loops"):
        LayerStack(cfg(), loops=0)


def test_norm_each_loop_ends_every_pass_on_a_layernorm():
    stack = LayerStack(cfg(), loops=2, norm_each_loop=True)
    z = stack(torch.randn(2, T, D))
    torch.testing.assert_close(z.mean(-1), torch.zeros(2, T), atol=1e-5, rtol=0)


def test_passes_backpropagate_through_the_window_only():
    torch.manual_seed(0)
    stack = LayerStack(cfg(), loops=6)
    e = torch.randn(2, T, D, requires_grad=True)
    outs = stack.passes(e, window=2)
    assert len(outs) == 2
    torch.testing.assert_close(outs[-1], stack(e))
    # the window's first pass reads z_4, computed without gradient: only its "+ e" flows
    (g_window,) = torch.autograd.grad(outs[0].sum(), e)
    with torch.no_grad():
        z4 = stack.passes(e, loops=4)[-1]
    direct = e.detach().clone().requires_grad_(True)
    (g_direct,) = torch.autograd.grad(stack.step(z4 + direct).sum(), direct)
    torch.testing.assert_close(g_window, g_direct)


def test_looped_models_refuse_the_cache_and_read_the_last_position_after_every_pass():
    model = token_model(loops=3)
    tokens = torch.randint(V, (2, 5))
    with pytest.raises(ValueError, match="loops"):
        model(tokens, cache=model.new_cache())
    last = model(tokens, last_only=True)  # the earlier passes still read every position
    assert last.shape == (2, 1, V)
    torch.testing.assert_close(last[:, 0], model(tokens)[:, -1])


def test_wrapper_passes_give_the_head_after_each_loop():
    model = token_model(loops=3).eval()
    x = torch.randint(V, (2, T))
    outs = model.passes(x)
    assert [o.shape for o in outs] == [(2, T, V)] * 3
    torch.testing.assert_close(outs[-1], model(x))
    torch.testing.assert_close(outs[0], model(x, loops=1))


# --- read-ins -------------------------------------------------------------------------------
def test_vector_read_in_feeds_vectors_with_positions():
    torch.manual_seed(0)
    model = TransformerWrapper(VectorReadIn(5, D, T), LayerStack(cfg()), nn.Linear(D, 1))
    assert model(torch.randn(3, T, 5)).shape == (3, T, 1)
    read_in = model.read_in
    x = torch.randn(1, 2, 5)
    torch.testing.assert_close(read_in(x, start=3), read_in.proj(x) + read_in.pos_emb.weight[3:5])


@pytest.mark.parametrize("read_in", [TokenReadIn(V, D, T), VectorReadIn(3, D, T)])
def test_a_sequence_longer_than_the_positions_is_rejected(read_in):
    x = torch.zeros(1, T + 1, dtype=torch.long) if isinstance(read_in, TokenReadIn) else None
    x = torch.zeros(1, T + 1, 3) if x is None else x
    with pytest.raises(ValueError, match=f"max_len={T}"):
        read_in(x)


def test_tie_embeddings_needs_tokens_and_a_linear_head():
    with pytest.raises(ValueError, match="tie_embeddings"):
        TransformerWrapper(VectorReadIn(3, D, T), LayerStack(cfg()), nn.Linear(D, 3), tie_embeddings=True)  # fmt: skip


# --- decoding -------------------------------------------------------------------------------
def test_cached_decoding_equals_the_full_forward():
    model = token_model().eval()
    x = torch.randint(V, (2, T))
    cache = model.new_cache()
    steps = [model(x[:, :3], cache=cache)]
    for t in range(3, T):
        steps.append(model(x[:, t : t + 1], cache=cache, start=t))
    torch.testing.assert_close(torch.cat(steps, dim=1), model(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("strategy", ["greedy", "sample", "beam"])
def test_generation_with_and_without_the_cache_agree_past_the_positions(strategy):
    model = token_model().eval()
    prompt = torch.randint(V, (2, 3))
    kw = {"strategy": strategy, "temperature": 0.7, "top_k": 5, "beams": 3}
    cached = model.generate(prompt, 9, generator=torch.Generator().manual_seed(1), **kw)
    plain = model.generate(
        prompt, 9, use_cache=False, generator=torch.Generator().manual_seed(1), **kw
    )
    assert cached.shape == (2, 12)  # past max_len = 8: the window slides
    assert torch.equal(cached[:, :3], prompt)
    assert torch.equal(cached, plain)


def test_greedy_is_the_argmax_and_beam_of_one_is_greedy():
    model = token_model().eval()
    prompt = torch.randint(V, (2, 3))
    out = model.generate(prompt, 1)
    assert torch.equal(out[:, -1], model(prompt)[:, -1].argmax(-1))
    assert torch.equal(
        model.generate(prompt, 4, strategy="beam", beams=1), model.generate(prompt, 4)
    )


def test_beam_search_finds_a_sequence_at_least_as_likely_as_greedy():
    model = token_model().eval()
    prompt = torch.randint(V, (3, 2))

    def logp(seq):
        lp = torch.log_softmax(model(seq[:, :-1]), -1)
        return lp.gather(-1, seq[:, 1:, None])[:, 1:].sum((1, 2))  # the new tokens only

    greedy = model.generate(prompt, 4)
    beam = model.generate(prompt, 4, strategy="beam", beams=4)
    assert (logp(beam) >= logp(greedy) - 1e-5).all()


def test_top_k_samples_only_the_k_most_likely():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]]).repeat(500, 1)
    tokens = sample_next(
        logits, temperature=5.0, top_k=2, generator=torch.Generator().manual_seed(0)
    )
    assert set(tokens.flatten().tolist()) == {1, 3}
    assert torch.equal(sample_next(logits, temperature=0), logits.argmax(-1, keepdim=True))


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"strategy": "topk"}, "strategy='topk' is invalid"),
        ({"temperature": -1.0}, "temperature=-1.0 is invalid"),
        ({"top_k": 0}, "top_k=0 is invalid"),
        ({"beams": 0, "strategy": "beam"}, "beams=0 is invalid"),
    ],
)
def test_generate_rejects_bad_settings(bad, match):
    model = token_model()
    with pytest.raises(ValueError, match=match):
        generate(CachedDecoder(model), torch.zeros(1, 2, dtype=torch.long), 2, **bad)


def test_a_prompt_longer_than_the_positions_is_rejected():
    with pytest.raises(ValueError, match="max_len=8"):
        token_model().generate(torch.zeros(1, T + 1, dtype=torch.long), 2)
