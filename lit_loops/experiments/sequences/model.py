"""The sequence model: the design document's embeddings as a read-in, causal blocks, a
256-way head (``lit_loops.nn.TransformerWrapper``; KV-cached greedy, beam and sampled
generation come with it).

Embeddings (``embedding``), each followed by a linear read-in to ``d_model`` unless the
features already have that width:

* ``tuple`` (the document's choice): the fixed 2-vector ``(value / 255, position /
  max_position)``; with ``d_model = 2`` it *is* the residual stream, as in the document;
* ``learned``: a learned table of the 256 values plus learned positions (``TokenReadIn``);
* ``binary``: the value's 8 bits (±1, most significant first) and ``position /
  max_position``.

``model(tokens: (B, T) long, cache=None, start=0) -> logits (B, T, 256)``; ``start`` is the
absolute position of ``tokens[:, 0]`` (non-zero when decoding with a cache).
"""

from __future__ import annotations

import torch
from torch import nn

from lit_loops.checks import check_choice
from lit_loops.nn import LayerStack, TokenReadIn, TransformerConfig, TransformerWrapper
from lit_loops.nn.model import check_positions

VOCAB = 256
EMBEDDINGS = ("tuple", "learned", "binary")


class ValueFeatures(nn.Module):
    """Fixed features of each value and its position, ``(B, T) long -> (B, T, d_model)``:
    ``tuple`` (value / 255, position / max_position) or ``binary`` (8 bits as ±1 and
    position / max_position), then a linear map unless they already have ``d_model``."""

    def __init__(self, kind: str, d_model: int, max_len: int) -> None:
        super().__init__()
        check_choice("embedding", kind, ("tuple", "binary"))
        self.kind, self.max_len = kind, max_len
        n_features = 2 if kind == "tuple" else 9
        self.proj = nn.Identity() if n_features == d_model else nn.Linear(n_features, d_model)
        # the 8 bits of every value, most significant first, as ±1: (256, 8)
        bits = (torch.arange(VOCAB)[:, None] >> torch.arange(7, -1, -1)) & 1
        self.register_buffer("bits", bits.float() * 2 - 1, persistent=False)

    def forward(self, tokens: torch.Tensor, start: int = 0) -> torch.Tensor:
        T = tokens.shape[1]
        check_positions(start, T, self.max_len)
        pos = torch.arange(start, start + T, device=tokens.device)
        # position / max_position, the same for every row: (T,) -> (B, T, 1)
        where = (pos.float() / (self.max_len - 1)).expand(tokens.shape).unsqueeze(-1)
        if self.kind == "tuple":
            features = torch.cat([tokens.unsqueeze(-1).float() / (VOCAB - 1), where], dim=-1)
        else:
            features = torch.cat([self.bits[tokens], where], dim=-1)  # (B, T, 9)
        return self.proj(features)


def sequence_model(net: TransformerConfig, max_len: int, embedding: str = "tuple"):
    """The next-term model over ``max_len`` positions (see the module docs)."""
    check_choice("embedding", embedding, EMBEDDINGS)
    d = net.d_model
    read_in = (
        TokenReadIn(VOCAB, d, max_len)
        if embedding == "learned"
        else ValueFeatures(embedding, d, max_len)
    )
    return TransformerWrapper(read_in, LayerStack(net, causal=True), nn.Linear(d, VOCAB))
