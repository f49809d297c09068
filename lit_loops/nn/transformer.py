"""The layer stack every experiment's network is built on: pre-norm blocks on
``F.scaled_dot_product_attention``, applied once (a plain transformer) or looped with input
injection (Yang et al.'s looped transformer), causal or not.

``TransformerConfig`` is the stack's one validated dataclass: what a user sets under
``model.init_args.net`` in a config. Read-ins, heads and the wrapper that joins them to the
stack are in ``lit_loops.nn.model``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from lit_loops.checks import check, check_choice, check_float, check_positive_int
from lit_loops.nn.attention import KVCache, SelfAttention

ACTIVATIONS = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "gelu_tanh": partial(nn.GELU, approximate="tanh"),  # GPT-2's (HF "gelu_new", nanoGPT)
    "silu": nn.SiLU,
    "swish": nn.SiLU,
}
NORMS = ("layernorm", "none")


@dataclass
class TransformerConfig:
    """The layer stack.

    Args:
        d_model: width of the residual stream.
        n_layers: blocks per pass.
        n_heads: attention heads (must divide ``d_model``).
        d_mlp: hidden width of the MLP (None: ``4 * d_model``).
        attn_only: blocks without an MLP.
        norm: ``layernorm`` (pre-norm) or ``none``.
        activation: the MLP's ``relu``, ``gelu`` (exact), ``gelu_tanh`` (GPT-2's tanh
            approximation), ``silu`` (= ``swish``).
        dropout: on attention probabilities, MLP outputs and the read-in.
        bias: biases on the linear maps.
    """

    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    d_mlp: int | None = None
    attn_only: bool = False
    norm: str = "layernorm"
    activation: str = "relu"
    dropout: float = 0.0
    bias: bool = True

    def __post_init__(self) -> None:
        # The whole config is validated in one place, with messages naming the field.
        # Derived values (d_mlp None) stay None here and are read through properties, so
        # a config that changes d_model alone gets the matching MLP width.
        for name in ("d_model", "n_layers", "n_heads"):
            check_positive_int(f"net.{name}", getattr(self, name))
        if self.d_mlp is not None:
            check_positive_int("net.d_mlp", self.d_mlp)
        check(
            self.d_model % self.n_heads == 0,
            "net.n_heads",
            self.n_heads,
            f"must divide net.d_model={self.d_model}",
        )
        check_choice("net.norm", self.norm, NORMS)
        check_choice("net.activation", self.activation, ACTIVATIONS)
        check_float("net.dropout", self.dropout, 0.0, 1.0, high_inclusive=False)

    @property
    def mlp_width(self) -> int:
        return 4 * self.d_model if self.d_mlp is None else self.d_mlp


def make_norm(kind: str, d: int) -> nn.Module:
    return nn.LayerNorm(d) if kind == "layernorm" else nn.Identity()


def init_weights(module: nn.Module) -> None:
    """GPT-2's initialisation, for ``module.apply``: linear maps and embeddings from
    N(0, 0.02), biases 0 (norms keep their ones and zeros)."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)
    if callable(getattr(module, "gpt2_init", None)):  # a module that sets its own scales
        module.gpt2_init()  # (``apply`` visits it after its children)


def num_parameters(module: nn.Module) -> int:
    """Parameters of ``module``, each shared (tied) tensor counted once."""
    return sum(p.numel() for p in module.parameters())


class MLP(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.up = nn.Linear(cfg.d_model, cfg.mlp_width, bias=cfg.bias)
        self.act = ACTIVATIONS[cfg.activation]()
        self.down = nn.Linear(cfg.mlp_width, cfg.d_model, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.down(self.act(self.up(x))))


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x)) unless attention-only."""

    def __init__(self, cfg: TransformerConfig, causal: bool = True) -> None:
        super().__init__()
        self.norm_attn = make_norm(cfg.norm, cfg.d_model)
        self.attn = SelfAttention(cfg.d_model, cfg.n_heads, causal, cfg.bias, cfg.dropout)
        self.mlp = None if cfg.attn_only else MLP(cfg)
        self.norm_mlp = None if cfg.attn_only else make_norm(cfg.norm, cfg.d_model)

    def forward(
        self,
        x: torch.Tensor,
        cache: KVCache | None = None,
        layer: int = 0,
        last_only: bool = False,
    ) -> torch.Tensor:
        """``(B, T, D) -> (B, T, D)``; ``cache``/``layer``: see ``SelfAttention``;
        ``last_only``: only the last position, ``(B, 1, D)``."""
        h = self.attn(self.norm_attn(x), cache, layer, last_only)
        x = (x[:, -1:] if last_only else x) + h
        if self.mlp is not None:
            x = x + self.mlp(self.norm_mlp(x))
        return x


class LayerStack(nn.Module):
    """``cfg.n_layers`` blocks, applied ``loops`` times with input injection:
    ``z_0 = 0, z_{t+1} = f(z_t + e)``, ``f`` = the blocks (then a LayerNorm with
    ``norm_each_loop``). One loop is the plain stack, ``f(e)``.

    ``forward(e: (B, T, D)) -> (B, T, D)``. Incremental decoding (``cache``) needs a single
    pass; reading one position (``last_only``) saves work in the last pass only.

    Args:
        cfg: the blocks.
        causal: mask future positions (False: every position sees every other).
        loops: passes by default (``forward(..., loops=k)`` overrides it).
        norm_each_loop: a LayerNorm after every pass (Yang et al.'s looped model).
    """

    def __init__(
        self,
        cfg: TransformerConfig,
        causal: bool = True,
        loops: int = 1,
        norm_each_loop: bool = False,
    ) -> None:
        super().__init__()
        check_positive_int("loops", loops)
        self.cfg, self.causal, self.loops = cfg, causal, loops
        self.blocks = nn.ModuleList(Block(cfg, causal) for _ in range(cfg.n_layers))
        self.loop_norm = nn.LayerNorm(cfg.d_model) if norm_each_loop else None

    def new_cache(self) -> KVCache:
        return KVCache(len(self.blocks))

    def step(
        self,
        z: torch.Tensor,
        cache: KVCache | None = None,
        last_only: bool = False,
    ) -> torch.Tensor:
        """One pass of the blocks: ``(B, T, D) -> (B, T, D)`` (``(B, 1, D)`` with
        ``last_only``: the last block computes the last position alone)."""
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            z = block(z, cache, i, last_only and i == last)
        return z if self.loop_norm is None else self.loop_norm(z)

    def forward(
        self,
        e: torch.Tensor,
        loops: int | None = None,
        cache: KVCache | None = None,
        last_only: bool = False,
    ) -> torch.Tensor:
        loops = self.loops if loops is None else loops
        check_positive_int("loops", loops)
        if loops == 1:
            return self.step(e, cache, last_only)  # z_1 = f(0 + e)
        check(
            cache is None,
            "loops",
            loops,
            "must be 1 for cached decoding (every pass rereads every position)",
        )
        if not last_only:
            return self.passes(e, loops)[-1]
        # every pass but the last needs every position; the last computes the last alone
        z = self.passes(e, loops - 1)[-1]
        return self.step(z + e, last_only=True)

    def passes(
        self, e: torch.Tensor, loops: int | None = None, window: int | None = None
    ) -> list[torch.Tensor]:
        """``z`` after each of the last ``window`` passes (all passes when None), a list of
        ``(B, T, D)``. The passes before the window run without gradient, so training on
        these outputs backpropagates through ``window`` passes only (Yang et al.'s
        truncated loss)."""
        loops = self.loops if loops is None else loops
        check_positive_int("loops", loops)
        first = 0 if window is None else max(0, loops - window)
        z = torch.zeros_like(e)
        with torch.no_grad():
            for _ in range(first):
                z = self.step(z + e)
        out = []
        for _ in range(first, loops):
            z = self.step(z + e)
            out.append(z)
        return out
