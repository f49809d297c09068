"""A looped (weight-tied) transformer with input injection.

``L`` pre-norm blocks are applied ``loops`` times, and the input embedding ``e`` is added
to the residual stream before every pass::

    z_0 = 0,    z_{t+1} = blocks(z_t + e),    output z_loops

With ``loops = 1`` this is a plain stack of ``L`` blocks on ``e``. The weights do not
depend on ``loops``, so a model trained with one loop count can be run with another.

``norm_each_loop`` closes every pass with a LayerNorm, ``z_{t+1} = norm(blocks(z_t + e))``:
the loop body of Yang et al., whose backbone is a whole GPT-2 (blocks + final norm) called
once per loop; it keeps ``z`` bounded when run far past the trained loop count.
``outputs(e, loops, window)`` returns every pass's ``z`` for losses over several loops.
"""

from __future__ import annotations

import torch
from torch import nn

from lit_loops.checks import check_positive_int
from lit_loops.nn.transformer import Block, Transformer, TransformerConfig


class LoopedTransformer(nn.Module):
    """``cfg.n_layers`` blocks (``Block(cfg)``, causal if ``cfg.causal``) looped ``loops``
    times with input injection. Only the block fields of ``cfg`` are used (not the
    vocabulary or positions: the caller embeds and reads out).

    ``forward(e: (B, T, D), loops: int | None = None) -> (B, T, D)``, ``D = cfg.d_model``;
    ``loops`` overrides the default given here.
    """

    def __init__(
        self, cfg: TransformerConfig, loops: int = 1, norm_each_loop: bool = False
    ) -> None:
        super().__init__()
        check_positive_int("loops", loops)
        self.cfg = cfg
        self.loops = loops
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.loop_norm = nn.LayerNorm(cfg.d_model) if norm_each_loop else None
        self.apply(Transformer._init_weights)  # the same init as the plain Transformer

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def step(self, z: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """One pass: ``(B, T, D), (B, T, D) -> (B, T, D)``."""
        z = z + e  # input injection: every pass sees the input again
        for block in self.blocks:
            z = block(z)
        return z if self.loop_norm is None else self.loop_norm(z)

    def forward(self, e: torch.Tensor, loops: int | None = None) -> torch.Tensor:
        loops = self.loops if loops is None else loops
        check_positive_int("loops", loops)
        z = torch.zeros_like(e)
        for _ in range(loops):
            z = self.step(z, e)
        return z

    def outputs(
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
                z = self.step(z, e)
        out = []
        for _ in range(first, loops):
            z = self.step(z, e)
            out.append(z)
        return out
