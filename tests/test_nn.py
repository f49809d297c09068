import pytest
import torch

from lit_loops.nn import SelfAttention, Transformer, TransformerConfig


def tiny(**kw):
    args = dict(vocab_size=17, max_seq_len=8, d_model=16, n_layers=2, n_heads=4, d_mlp=32)
    args.update(kw)
    return Transformer(TransformerConfig(**args))


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"attn_only": True},
        {"norm": "none"},
        {"activation": "gelu"},
        {"n_layers": 1},
        {"bias": False},
    ],
)
def test_transformer_shapes(options):
    model = tiny(**options)
    logits = model(torch.randint(17, (3, 8)))
    assert logits.shape == (3, 8, 17)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize(
    "options",
    [{}, {"attn_only": True}, {"n_layers": 1}, {"causal": False}, {"tie_embeddings": True}],
)
def test_last_only_gives_the_last_positions_logits(options):
    """The shortcut for models read at one position: the same logits, gradients too."""
    model = tiny(**options)
    tokens = torch.randint(17, (3, 5))
    full = model(tokens)[:, -1]
    last = model(tokens, last_only=True)
    assert last.shape == (3, 1, 17)
    assert torch.allclose(last[:, 0], full, atol=1e-6)
    (g_full,) = torch.autograd.grad(full.square().sum(), model.blocks[0].attn.qkv.weight)
    (g_last,) = torch.autograd.grad(last.square().sum(), model.blocks[0].attn.qkv.weight)
    assert torch.allclose(g_full, g_last, atol=1e-5)


def test_attention_only_has_no_mlp():
    full, attn_only = tiny(), tiny(attn_only=True)
    assert attn_only.num_parameters() < full.num_parameters()
    assert all(block.mlp is None for block in attn_only.blocks)


def test_causal_mask_hides_the_future():
    torch.manual_seed(0)
    model = tiny().eval()
    x = torch.randint(17, (2, 8))
    y = x.clone()
    y[:, 5:] = (y[:, 5:] + 1) % 17  # change only positions 5..7
    a, b = model(x), model(y)
    torch.testing.assert_close(a[:, :5], b[:, :5])
    assert not torch.allclose(a[:, 5:], b[:, 5:])


def test_bidirectional_attention_sees_the_future():
    torch.manual_seed(0)
    attn = SelfAttention(16, 4, causal=False).eval()
    x = torch.randn(1, 6, 16)
    y = x.clone()
    y[:, -1] += 1.0
    assert not torch.allclose(attn(x)[:, 0], attn(y)[:, 0])


def test_sequence_longer_than_positions_is_rejected():
    with pytest.raises(ValueError, match="max_seq_len=8"):
        tiny()(torch.zeros(1, 9, dtype=torch.long))


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"n_heads": 3}, "n_heads=3 is invalid: must divide d_model=16"),
        ({"d_model": 0}, "d_model=0 is invalid"),
        ({"norm": "rms"}, "norm='rms' is invalid: must be one of"),
        ({"activation": "tanh"}, "activation='tanh' is invalid"),
        ({"dropout": 1.0}, "dropout=1.0 is invalid"),
    ],
)
def test_config_rejects_bad_values(bad, match):
    with pytest.raises(ValueError, match=match):
        tiny(**bad)
