"""Multi-head self-attention on ``F.scaled_dot_product_attention``.

SDPA picks the fastest kernel the device has (flash / memory-efficient on GPUs, a fused
C++ kernel on CPU), so no experiment writes its own softmax(QK^T)V.

Incremental decoding: ``forward(x, cache)`` with a ``KVCache`` appends the new tokens'
keys and values to the cache and lets the new queries attend to everything cached (plus,
causally, to each other), so generating a token costs one token's work, not a full pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class KVCache:
    """Keys and values of the tokens seen so far, one entry per attention layer.

    ``k[i], v[i]``: ``(B, H, T_past, Dh)`` for layer ``i`` (None before the first call).
    ``reorder(index)`` picks batch rows (beam search).
    """

    def __init__(self, n_layers: int) -> None:
        self.k: list[torch.Tensor | None] = [None] * n_layers
        self.v: list[torch.Tensor | None] = [None] * n_layers

    @property
    def length(self) -> int:
        return 0 if self.k[0] is None else self.k[0].shape[2]

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        if self.k[layer] is not None:
            k = torch.cat([self.k[layer], k], dim=2)
            v = torch.cat([self.v[layer], v], dim=2)
        self.k[layer], self.v[layer] = k, v
        return k, v

    def reorder(self, index: torch.Tensor) -> None:
        self.k = [None if k is None else k[index] for k in self.k]
        self.v = [None if v is None else v[index] for v in self.v]


class SelfAttention(nn.Module):
    """Causal (or bidirectional) multi-head self-attention.

    Args:
        d_model: width of the residual stream.
        n_heads: number of query heads; ``d_model`` must be divisible by it.
        causal: mask future positions.
        bias: biases on the projections.
        dropout: attention-probability dropout (training only).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        causal: bool = True,
        bias: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        self.causal = causal
        self.dropout = dropout
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.out = nn.Linear(d_model, d_model, bias=bias)

    def forward(
        self,
        x: torch.Tensor,
        cache: KVCache | None = None,
        layer: int = 0,
        last_only: bool = False,
    ) -> torch.Tensor:
        """``(B, T, D) -> (B, T, D)``; with ``cache``, ``x`` holds the next ``T`` tokens and
        ``layer`` says which of the cache's entries is this layer's. ``last_only``: only the
        last position's output, ``(B, 1, D)`` (it sees every position; no cache)."""
        B, T, D = x.shape
        # (B, T, 3D) -> 3 x (B, H, T, Dh)
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, self.d_head).permute(2, 0, 3, 1, 4)
        if last_only:  # the last query sees all keys: no mask
            y = F.scaled_dot_product_attention(
                q[:, :, -1:], k, v, dropout_p=self.dropout if self.training else 0.0
            )
            return self.out(y.transpose(1, 2).reshape(B, 1, D))
        mask, is_causal = None, self.causal
        if cache is not None:
            past = 0 if cache.k[layer] is None else cache.k[layer].shape[2]
            k, v = cache.append(layer, k, v)
            if self.causal and past > 0:
                # new token i (absolute past + i) sees keys 0 .. past + i: (T, past + T)
                mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(past)
                is_causal = False
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            is_causal=is_causal,
            dropout_p=self.dropout if self.training else 0.0,
        )
        # (B, H, T, Dh) -> (B, T, D)
        return self.out(y.transpose(1, 2).reshape(B, T, D))
