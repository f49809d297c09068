"""A small pre-norm transformer (nanoGPT-shaped), configured by one validated dataclass."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lit_loops.checks import check, check_choice, check_float, check_positive_int
from lit_loops.nn.attention import SelfAttention

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "swish": nn.SiLU}
NORMS = ("layernorm", "none")


@dataclass
class TransformerConfig:
    vocab_size: int
    max_seq_len: int
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    d_mlp: int = 512
    attn_only: bool = False
    norm: str = "layernorm"
    activation: str = "relu"
    causal: bool = True
    dropout: float = 0.0
    bias: bool = True
    tie_embeddings: bool = False  # unembedding = token embedding^T (as GPT-2)

    def __post_init__(self) -> None:
        # The whole config is validated in one place, with messages naming the argument.
        for name in ("vocab_size", "max_seq_len", "d_model", "n_layers", "n_heads", "d_mlp"):
            check_positive_int(name, getattr(self, name))
        check(
            self.d_model % self.n_heads == 0,
            "n_heads",
            self.n_heads,
            f"must divide d_model={self.d_model}",
        )
        check_choice("norm", self.norm, NORMS)
        check_choice("activation", self.activation, ACTIVATIONS)
        check_float("dropout", self.dropout, 0.0, 1.0, high_inclusive=False)


def make_norm(kind: str, d: int) -> nn.Module:
    return nn.LayerNorm(d) if kind == "layernorm" else nn.Identity()


class MLP(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.up = nn.Linear(cfg.d_model, cfg.d_mlp, bias=cfg.bias)
        self.act = ACTIVATIONS[cfg.activation]()
        self.down = nn.Linear(cfg.d_mlp, cfg.d_model, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.down(self.act(self.up(x))))


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x)) unless attention-only."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.norm_attn = make_norm(cfg.norm, cfg.d_model)
        self.attn = SelfAttention(cfg.d_model, cfg.n_heads, cfg.causal, cfg.bias, cfg.dropout)
        self.mlp = None if cfg.attn_only else MLP(cfg)
        self.norm_mlp = None if cfg.attn_only else make_norm(cfg.norm, cfg.d_model)

    def forward(
        self, x: torch.Tensor, cache=None, layer: int = 0, last_only: bool = False
    ) -> torch.Tensor:
        """``(B, T, D) -> (B, T, D)``; ``cache``/``layer``: see ``SelfAttention``;
        ``last_only``: only the last position, ``(B, 1, D)``."""
        h = self.attn(self.norm_attn(x), cache, layer, last_only)
        x = (x[:, -1:] if last_only else x) + h
        if self.mlp is not None:
            x = x + self.mlp(self.norm_mlp(x))
        return x


class Transformer(nn.Module):
    """Token + learned position embeddings, ``n_layers`` blocks, final norm, unembedding.

    ``forward(tokens: (B, T) long) -> logits: (B, T, vocab_size)``; with
    ``last_only=True``, the last position's logits only, ``(B, 1, vocab_size)``: the last
    block, final norm and unembedding then run for that position alone (a model read at
    one position needs no more).
    """

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.max_seq_len, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm_final = make_norm(cfg.norm, cfg.d_model)
        self.unembed = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.apply(self._init_weights)
        if cfg.tie_embeddings:
            self.unembed.weight = self.tok_emb.weight

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, tokens: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        B, T = tokens.shape
        if T > self.cfg.max_seq_len:
            raise ValueError(f"sequence length {T} exceeds max_seq_len={self.cfg.max_seq_len}")
        pos = torch.arange(T, device=tokens.device)
        x = self.drop(self.tok_emb(tokens) + self.pos_emb(pos))  # (B, T, D)
        for i, block in enumerate(self.blocks):
            x = block(x, last_only=last_only and i == len(self.blocks) - 1)
        return self.unembed(self.norm_final(x))  # (B, T, V), or (B, 1, V) with last_only
