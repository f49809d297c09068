"""Multi-head self-attention on ``F.scaled_dot_product_attention``.

SDPA picks the fastest kernel the device has (flash / memory-efficient on GPUs, a fused
C++ kernel on CPU), so no experiment writes its own softmax(QK^T)V.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        # (B, T, 3D) -> 3 x (B, H, T, Dh)
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, self.d_head).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=self.causal, dropout_p=self.dropout if self.training else 0.0
        )
        # (B, H, T, Dh) -> (B, T, D)
        return self.out(y.transpose(1, 2).reshape(B, T, D))
