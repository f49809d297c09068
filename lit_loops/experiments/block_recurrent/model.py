"""The Block-Recurrent Transformer (Hutchins et al. 2022), with the interface of the
``block-recurrent-transformer-pytorch`` package (seed 004), written for this suite.

A sequence is read block by block (``block_width`` tokens). In every layer, a block's
tokens attend causally to each other and to the XL memory: the previous block's keys and
values (plus, with ``use_compressed_mem``, older blocks compressed ``compressed_mem_factor``
times by a strided convolution). Keys and values are single-headed (multi-query attention,
Shazeer 2019), positions are rotary (xPos as an option). Recurrent layers use cosine
attention (l2-normalised q/k with learned per-channel scales) at a fixed temperature
(``qk_norm_scale``). ``reference.py`` maps the reference package's weights onto this
model; which options give its behaviour: ``BlockRecurrentConfig``.

Recurrent layers also hold ``num_state_vectors`` state vectors. A block's tokens read them
(cross-attention, at the recurrent layer or at an earlier ``read_recurrent_layers`` layer);
after the block, the states attend to themselves and to the block's keys/values, and the
result is folded in through a gate: the fixed simple gate (a learned moving average,
``new = a * z + (1 - a) * old``) or an LSTM-style input/forget gate; ``state_cell`` puts a
feed-forward on that path (after meliad's "single" and "dual" cells). States and memories
change only when a block is complete, so a trailing partial block reads but never writes;
this makes token-by-token decoding with ``RecurrentCache`` equal the full forward.

All attention goes through ``F.scaled_dot_product_attention``; with single-headed keys the
heads are folded into the query axis (``(B, H, n, Dh) -> (B, 1, H*n, Dh)``), one kernel call
per attention with no copies of the keys. ``use_flash_attn`` selects SDPA's fused kernels
(flash on CPU and GPU); off, SDPA's math backend (the reference implementation).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from lit_loops.checks import check, check_choice, check_float, check_int, check_positive_int
from lit_loops.nn.sampling import generate

GATES = ("fixed", "lstm")
STATE_CELLS = ("skip", "single", "dual")
QK_NORM_ORDERS = ("rotary_first", "norm_first")


def multi_query_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """``q (B, n, H, Dh)`` against single-headed ``k, v (B, m, Dh)`` -> ``(B, n, H*Dh)``.

    ``mask`` (n, m) bool, True = may attend. All heads share the keys, so the heads are
    folded into the query axis, position-major: ``(B, n, H, Dh)`` is viewed as
    ``(B, 1, n*H, Dh)`` (row ``i*H + h`` is position i, head h), one SDPA call, and the
    output views back to ``(B, n, H*Dh)``: no transposes, no copies.
    """
    B, n, H, Dh = q.shape
    if mask is not None:
        mask = mask.repeat_interleave(H, dim=0)  # (n*H, m): each position's row per head
    out = F.scaled_dot_product_attention(
        q.reshape(B, 1, n * H, Dh), k[:, None], v[:, None], attn_mask=mask, scale=scale
    )
    return out.view(B, n, H * Dh)


def causal_mask(n: int, m: int, device: torch.device) -> torch.Tensor | None:
    """Query i of the last ``n`` of ``m`` positions sees keys ``0 .. m - n + i``: (n, m)."""
    if n == 1:
        return None  # the newest token sees everything
    return torch.ones(n, m, dtype=torch.bool, device=device).tril(m - n)


class Rotary(nn.Module):
    """Rotary position embedding; with ``xpos``, the length-extrapolating scaling of
    Sun et al. 2022 (queries scaled by ``s**p``, keys by ``s**-p``: still relative)."""

    def __init__(self, dim_head: int, xpos: bool = False, xpos_scale_base: int = 512) -> None:
        super().__init__()
        half = torch.arange(0, dim_head, 2).float()
        self.register_buffer("inv_freq", 1.0 / (10000 ** (half / dim_head)), persistent=False)
        self.register_buffer(
            "xpos_base", (half + 0.4 * dim_head) / (1.4 * dim_head), persistent=False
        )
        self.xpos = xpos
        self.xpos_scale_base = xpos_scale_base
        self._tables: tuple | None = None

    def tables(self, start: int, end: int):
        """cos, sin, scale for positions ``start .. end-1``: each (end - start, Dh).
        Computed once for the longest range seen and sliced after (decoding asks for one
        position per token)."""
        if self._tables is None or self._tables[0].shape[0] < end:
            self._tables = self._compute(max(end, 1024))
        return tuple(None if t is None else t[start:end] for t in self._tables)

    def _compute(self, end: int):
        pos = torch.arange(end, device=self.inv_freq.device, dtype=torch.float32)
        freqs = pos[:, None] * self.inv_freq[None, :]
        freqs = torch.cat([freqs, freqs], dim=-1)
        scale = None
        if self.xpos:
            scale = self.xpos_base[None, :] ** (pos[:, None] / self.xpos_scale_base)
            scale = torch.cat([scale, scale], dim=-1)
        return freqs.cos(), freqs.sin(), scale

    def _apply(self, fn, *args, **kwargs):
        self._tables = None  # recomputed on the new device / dtype
        return super()._apply(fn, *args, **kwargs)

    @staticmethod
    def rotate(t: torch.Tensor, tables, key: bool = False) -> torch.Tensor:
        """Rotates ``t (..., n, Dh)`` by the tables of its n positions (tables viewed as
        ``(n, 1, Dh)`` rotate ``(B, n, H, Dh)`` queries, every head alike)."""
        cos, sin, scale = tables
        t1, t2 = t.chunk(2, dim=-1)
        out = t * cos + torch.cat([-t2, t1], dim=-1) * sin
        if scale is not None:
            out = out / scale if key else out * scale
        return out


class QKNorm(nn.Module):
    """l2-normalised queries and keys with learned per-channel scales (the reference's
    ``qk_rmsnorm``; the paper uses cosine attention in its recurrent layers).

    ``scale`` is the softmax temperature the attention then runs at (None: SDPA's
    default ``1/sqrt(dim_head)``, the reference's effective one)."""

    def __init__(self, dim_head: int, scale: float | None = 8.0) -> None:
        super().__init__()
        self.scale = scale
        self.q_scale = nn.Parameter(torch.ones(dim_head))
        self.k_scale = nn.Parameter(torch.ones(dim_head))

    def queries(self, q: torch.Tensor) -> torch.Tensor:
        return F.normalize(q, dim=-1) * self.q_scale

    def keys(self, k: torch.Tensor) -> torch.Tensor:
        return F.normalize(k, dim=-1) * self.k_scale

    def forward(self, q: torch.Tensor, k: torch.Tensor):
        return self.queries(q), self.keys(k)


class FeedForward(nn.Sequential):
    """Pre-LN GEGLU feed-forward (inner width ``mult * dim * 2/3``, bias-free)."""

    def __init__(self, dim: int, mult: float = 4) -> None:
        inner = int(dim * mult * 2 / 3)
        super().__init__(
            nn.LayerNorm(dim, bias=False),
            nn.Linear(dim, 2 * inner, bias=False),
            _GEGLU(),
            nn.Linear(inner, dim, bias=False),
        )


class _GEGLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = x.chunk(2, dim=-1)
        return F.gelu(gate) * x


class StateCell(nn.Module):
    """The recurrent states of one layer: how tokens read them and how a block updates
    them. ``prepare`` runs once per block; ``read`` at the reading layer; ``write`` after
    the block, from the block's keys/values at the writing layer.

    ``state_cell`` (after meliad's recurrent ``TransformerLayer``: its
    ``recurrent_skip_ffn`` / ``recurrent_single_gate``) says what follows the states'
    two attentions (``a``: their outputs concatenated, ``(B, S, 2*H*Dh)``):

    - ``skip``: ``h = out(a)`` gated onto the states (``gate``): no feed-forward;
    - ``dual``: as ``skip``, then ``y = ff(LN(new))`` (a GEGLU feed-forward of the token
      layers' kind and width, its own weights) through a second gate of the same kind
      onto ``new``;
    - ``single``: no projection and no first gate: ``y = tanh(ff(a))`` (the MLP takes
      the ``2*H*Dh`` attention outputs, no LayerNorm) through one gate onto the states.

    The gates after the feed-forward (``ff_ema_logit``, ``ff_gates``): fixed, a learned
    per-channel moving average of its own; lstm, input and forget gates (forget bias 1)
    from the feed-forward's hidden layer (as meliad's ``MLP._gate``), candidate ``y``."""

    def __init__(
        self,
        dim: int,
        heads: int,
        dim_head: int,
        num_state_vectors: int,
        gate: str,
        qk_norm_scale: float | None = 8.0,
        state_cell: str = "skip",
        ff_mult: float = 4,
    ) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads, self.dim_head = heads, dim_head
        self.init_state = nn.Parameter(torch.randn(num_state_vectors, dim) * 0.1)
        # added after the LayerNorm: the states are otherwise interchangeable
        self.state_pos = nn.Parameter(torch.randn(num_state_vectors, dim))
        self.norm = nn.LayerNorm(dim, bias=False)
        self.state_kv = nn.Linear(dim, 2 * dim_head, bias=False)
        self.token_q = nn.Linear(dim, inner, bias=False)  # tokens -> states
        self.self_q = nn.Linear(dim, inner, bias=False)  # states -> states
        self.cross_q = nn.Linear(dim, inner, bias=False)  # states -> block
        self.qk_read, self.qk_self, self.qk_cross = (
            QKNorm(dim_head, qk_norm_scale) for _ in range(3)
        )
        self.gate = gate
        self.state_cell = state_cell
        if state_cell != "single":  # skip, dual: projection and the first gate
            self.out = nn.Linear(2 * inner, dim, bias=False)
            if gate == "fixed":
                self.to_z = nn.Linear(dim, dim)
                self.ema_logit = nn.Parameter(torch.randn(dim) * 0.1)
            else:  # lstm: z = tanh(Wz h), i = sigmoid(Wi h), f = sigmoid(Wf h + 1)
                self.to_gates = nn.Linear(dim, 3 * dim)
                with torch.no_grad():
                    self.to_gates.bias[2 * dim :].fill_(1.0)  # start by remembering
        if state_cell == "skip":
            return
        if state_cell == "dual":  # LN, (D -> 2F), GEGLU, (F -> D) on the gated states
            self.ff = FeedForward(dim, ff_mult)
        else:  # single: (2*H*Dh -> 2F), GEGLU, (F -> D) on the attention outputs
            hidden = int(dim * ff_mult * 2 / 3)
            self.ff = nn.Sequential(
                nn.Linear(2 * inner, 2 * hidden, bias=False),
                _GEGLU(),
                nn.Linear(hidden, dim, bias=False),
            )
        if gate == "fixed":
            self.ff_ema_logit = nn.Parameter(torch.randn(dim) * 0.1)
        else:  # i, f from the feed-forward's hidden layer (B, S, F) -> (B, S, 2*D)
            self.ff_gates = nn.Linear(self.ff[-1].in_features, 2 * dim)
            with torch.no_grad():
                self.ff_gates.bias[dim:].fill_(1.0)  # start by remembering

    def initial(self, batch: int) -> torch.Tensor:
        return self.init_state.expand(batch, -1, -1)  # (B, S, D)

    def prepare(self, states: torch.Tensor) -> tuple:
        """states (B, S, D) -> what reads and the write need: normed states and their
        single-headed keys/values (B, S, Dh)."""
        normed = self.norm(states) + self.state_pos
        k, v = self.state_kv(normed).chunk(2, dim=-1)
        return states, normed, k, v

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        B, n, _ = x.shape  # (B, n, H*Dh) -> (B, n, H, Dh), a view
        return x.view(B, n, self.heads, self.dim_head)

    def read(self, h: torch.Tensor, prepared: tuple) -> torch.Tensor:
        """Normed tokens h (B, n, D) attend to the states -> (B, n, H*Dh)."""
        _, _, k, v = prepared
        q, k = self.qk_read(self._heads(self.token_q(h)), k)
        return multi_query_attention(q, k, v, scale=self.qk_read.scale)

    def write(self, prepared: tuple, block_k: torch.Tensor, block_v: torch.Tensor):
        """The states after a block whose keys/values (B, w, Dh) are given: (B, S, D)."""
        states, normed, k, v = prepared
        q_self, k_self = self.qk_self(self._heads(self.self_q(normed)), k)
        q_cross, k_cross = self.qk_cross(self._heads(self.cross_q(normed)), block_k)
        h = torch.cat(
            [
                multi_query_attention(q_self, k_self, v, scale=self.qk_self.scale),
                multi_query_attention(q_cross, k_cross, block_v, scale=self.qk_cross.scale),
            ],
            dim=-1,
        )  # (B, S, 2*H*Dh)
        if self.state_cell == "single":
            return self._ff_gate(h, states, squash=True)
        h = self.out(h)  # (B, S, D)
        if self.gate == "fixed":
            a = torch.sigmoid(self.ema_logit)
            new = a * self.to_z(h) + (1 - a) * states
        else:
            z, i, f = self.to_gates(h).chunk(3, dim=-1)  # (B, S, 3*D) -> 3 x (B, S, D)
            new = torch.sigmoid(f) * states + torch.sigmoid(i) * torch.tanh(z)
        if self.state_cell == "dual":
            return self._ff_gate(new, new, squash=False)
        return new

    def _ff_gate(self, x: torch.Tensor, old: torch.Tensor, squash: bool) -> torch.Tensor:
        """``ff(x)`` (``x``: (B, S, D) for dual, (B, S, 2*H*Dh) for single; tanh with
        ``squash``) gated onto ``old`` (B, S, D) -> (B, S, D)."""
        *up, down = self.ff
        hidden = x
        for layer in up:  # (LN), the up-projection, the GEGLU: (B, S, F)
            hidden = layer(hidden)
        y = down(hidden)  # (B, S, D)
        if squash:
            y = torch.tanh(y)
        if self.gate == "fixed":
            a = torch.sigmoid(self.ff_ema_logit)
            return a * y + (1 - a) * old
        i, f = self.ff_gates(hidden).chunk(2, dim=-1)  # (B, S, 2*D) -> 2 x (B, S, D)
        return torch.sigmoid(f) * old + torch.sigmoid(i) * y


class BlockRecurrentLayer(nn.Module):
    """Pre-LN multi-query attention over [XL memory, block] (+ state reads), then GEGLU.

    With ``qk_norm``, queries and keys are l2-normalised (times learned per-channel
    scales) and the attention runs at ``qk_norm_scale``; ``qk_norm_order`` says whether
    that happens after the rotary positions (``rotary_first``) or before them
    (``norm_first``, the reference's order)."""

    def __init__(
        self,
        dim: int,
        heads: int,
        dim_head: int,
        ff_mult: float,
        qk_norm: bool,
        num_reads: int,
        qk_norm_scale: float | None = 8.0,
        qk_norm_order: str = "rotary_first",
    ) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads, self.dim_head = heads, dim_head
        self.norm = nn.LayerNorm(dim, bias=False)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * dim_head, bias=False)
        self.qk_norm = QKNorm(dim_head, qk_norm_scale) if qk_norm else None
        self.norm_first = qk_norm and qk_norm_order == "norm_first"
        self.to_out = nn.Linear(inner * (1 + num_reads), dim, bias=False)
        self.ff = FeedForward(dim, ff_mult)

    def rotate_keys(self, k: torch.Tensor, tables: tuple) -> torch.Tensor:
        """Pre-rotary keys ``(B, n, Dh)`` (the block's or the XL memory's) as the attention
        holds them: rotated (normalised first with ``norm_first``)."""
        if self.norm_first:
            k = self.qk_norm.keys(k)
        return Rotary.rotate(k, tables, key=True)

    def forward(
        self,
        x: torch.Tensor,
        tables: tuple,
        past_keys: torch.Tensor | None,
        past_values: torch.Tensor | None,
        mask: torch.Tensor | None,
        reads: tuple = (),
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The layer on a piece of tokens ``x (B, n, D)`` of the current block, whose
        positions' rotary ``tables`` are given (each ``(n, Dh)``), after the rotated keys
        and the values seen before in this block and the XL memory (``past_keys``,
        ``past_values``: ``(B, P, Dh)`` or None); ``mask`` (n, P + n) or None; ``reads``:
        ``(StateCell, prepared states)`` pairs read at this layer.

        Returns ``(x, k, keys, values)``: the layer's output (B, n, D), the piece's
        pre-rotary keys (B, n, Dh), and the rotated keys / values so far (B, P + n, Dh).
        The unit ``torch.compile`` compiles (``lit_loops.compile``): one call per layer and
        piece, whatever the number of blocks."""
        B, n, _ = x.shape
        h = self.norm(x)
        q = self.to_q(h).view(B, n, self.heads, self.dim_head)  # (B, n, H, Dh)
        k, v = self.to_kv(h).chunk(2, dim=-1)  # (B, n, Dh) each, single-headed
        k_rot = self.rotate_keys(k, tables)
        if past_keys is not None:
            k_rot = torch.cat([past_keys, k_rot], dim=1)
            v = torch.cat([past_values, v], dim=1)
        if self.norm_first:
            q = self.qk_norm.queries(q)
        q = Rotary.rotate(q, [None if t is None else t[:, None] for t in tables])  # (n, 1, Dh)
        keys, scale = k_rot, None
        if self.qk_norm is not None:
            if not self.norm_first:
                q, keys = self.qk_norm(q, keys)
            scale = self.qk_norm.scale
        out = multi_query_attention(q, keys, v, mask, scale)
        parts = [out]  # (B, n, H*Dh)
        for cell, prepared in reads:
            parts.append(cell.read(h, prepared))
        x = x + self.to_out(torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0])
        x = x + self.ff(x)
        return x, k, k_rot, v


class RecurrentCache:
    """Where a stream of tokens stands: per layer the XL memory (pre-rotary, ``(2, B, M,
    Dh)``), the keys (as the attention holds them: ``rotate_keys``) and values of memory
    and current block so far, and the recurrent states.

    The full forward and cached decoding both run through it: ``forward`` feeds whole
    blocks, ``generate`` one token at a time.
    """

    def __init__(self, memories: list, states: list) -> None:
        self.memories = memories  # per layer: (2, B, M, Dh) or None
        self.states = states  # per recurrent layer: (B, S, D)
        self.filled = 0  # tokens of the current block seen so far
        self.keys: list = []  # per layer: (B, M + filled, Dh), rotate_keys
        self.values: list = []  # per layer: (B, M + filled, Dh)
        self.block_k: list = []  # per layer: (B, filled, Dh), pre-rotary (for memory, writes)
        self.prepared: list = []  # per recurrent layer: StateCell.prepare(states)

    @property
    def memory_length(self) -> int:
        m = self.memories[0]
        return 0 if m is None else m.shape[2]

    def reorder(self, index: torch.Tensor) -> None:
        """Keeps batch rows ``index`` (beam search): memories are ``(2, B, ...)``, the
        rest batch-first."""

        def rows(t, dim: int = 0):
            return None if t is None else t.index_select(dim, index)

        self.memories = [rows(m, 1) for m in self.memories]
        self.states = [rows(s) for s in self.states]
        self.keys = [rows(k) for k in self.keys]
        self.values = [rows(v) for v in self.values]
        self.block_k = [rows(k) for k in self.block_k]
        self.prepared = [tuple(rows(t) for t in p) for p in self.prepared]


@dataclass
class BlockRecurrentConfig:
    """The network (the ``block-recurrent-transformer-pytorch`` package's arguments, ours
    marked), validated in one place; what ``model.init_args.net`` holds.

    Args:
        dim, depth, dim_head, heads, ff_mult: width, layers, attention heads (queries;
            keys and values are single-headed), feed-forward multiplier.
        max_seq_len: the longest ``seq`` one call takes, a multiple of ``block_width``.
        block_width: tokens per block.
        num_state_vectors: state vectors per recurrent layer (None: ``block_width``).
        recurrent_layers: 1-based (None: the middle layer ``max(1, depth // 2)``; empty:
            none, a Transformer-XL).
        read_recurrent_layers: where each recurrent layer's states are read, <= its
            layer (None: the same layer).
        use_compressed_mem, compressed_mem_factor: older blocks compressed by a strided
            convolution.
        use_flash_attn: SDPA's fused kernels (off: its math backend).
        use_xpos (ours): xPos scaling on the rotary positions (the reference: always on).
        gate (ours): ``fixed`` (the paper's best, the reference's only gate) or ``lstm``
            (our own design: tanh candidate, sigmoid input gate, forget gate biased to 1).
        state_cell (ours, after meliad's ``recurrent_skip_ffn`` / ``recurrent_single_gate``
            configurations): what follows the states' attentions, whose outputs are
            concatenated to ``(B, S, 2*heads*dim_head)``. ``skip`` (the default: meliad's
            Rec:fixed:skip, which the reference follows): projected to ``(B, S, dim)``
            and gated onto the states, no feed-forward. ``dual``: then a
            feed-forward of its own (the token layers' GEGLU, ``ff_mult``; LayerNorm
            first) and a second gate of the ``gate`` kind onto the result. ``single``: no
            projection and one gate: ``tanh(ff(attention outputs))`` (the feed-forward
            maps ``2*heads*dim_head -> dim``) gated onto the states. The lstm gates after
            the feed-forward read its hidden layer (as meliad's). ``StateCell``.
        all_layers_qk_norm (ours): the reference normalises q/k in recurrent layers only.
        qk_norm_scale (ours): the softmax temperature of the attentions whose q/k are
            l2-normalised (the recurrent layers' attention, the three state attentions,
            every layer with ``all_layers_qk_norm``); a positive number, or None for
            ``1/sqrt(dim_head)``: the reference's effective temperature (its
            ``qk_rmsnorm_scale=8`` is computed but never passed to the attention).
            Default 8 (as ``qk_rmsnorm_scale`` intends, and what the shipped results used).
        qk_norm_order (ours): ``rotary_first`` (the default, what the shipped results
            used): q/k rotated, then normalised and scaled by the learned per-channel
            scales; ``norm_first`` (the reference's): normalised and scaled, then rotated,
            so the scores depend on offsets only (once the learned scales are no longer
            1, ``rotary_first`` depends on absolute positions too, and with xPos its
            normalisation undoes part of xPos's scaling).
        ignore_index: of the cross-entropy with ``return_loss``.

    The reference's behaviour: ``qk_norm_scale=None, use_xpos=True,
    qk_norm_order="norm_first"`` with ``gate="fixed"`` (``reference.REFERENCE_OPTIONS``).
    """

    dim: int = 512
    depth: int = 6
    dim_head: int = 64
    heads: int = 8
    ff_mult: float = 4
    max_seq_len: int = 1024
    block_width: int = 512
    num_state_vectors: int | None = None
    recurrent_layers: list[int] | None = None
    read_recurrent_layers: list[int] | None = None
    use_compressed_mem: bool = False
    compressed_mem_factor: int = 4
    use_flash_attn: bool = True
    use_xpos: bool = False
    gate: str = "fixed"
    state_cell: str = "skip"
    all_layers_qk_norm: bool = False
    qk_norm_scale: float | None = 8.0
    qk_norm_order: str = "rotary_first"
    ignore_index: int = -100

    def __post_init__(self) -> None:
        for name in ("dim", "depth", "dim_head", "heads", "max_seq_len", "block_width"):
            check_positive_int(name, getattr(self, name))
        check(self.dim_head % 2 == 0, "dim_head", self.dim_head, "must be even (rotary positions)")
        check_float("ff_mult", self.ff_mult, 0.0, low_inclusive=False)
        check(
            int(self.dim * self.ff_mult * 2 / 3) >= 1,
            "ff_mult",
            self.ff_mult,
            f"is too small for dim={self.dim}: the feed-forward width "
            "int(dim * ff_mult * 2/3) must be at least 1",
        )
        check(
            self.max_seq_len % self.block_width == 0,
            "max_seq_len",
            self.max_seq_len,
            f"must be a multiple of block_width={self.block_width}",
        )
        # derived values stay None (read through the properties below), so a config that
        # changes block_width or depth alone gets the matching defaults
        check_positive_int("num_state_vectors", self.state_vectors)
        for layer in self.writes:
            check_int("recurrent_layers", layer, min_value=1, max_value=self.depth)
        check(
            len(set(self.writes)) == len(self.writes),
            "recurrent_layers",
            self.recurrent_layers,
            "must not repeat a layer",
        )
        check(
            len(self.reads) == len(self.writes)
            and all(1 <= r <= w for r, w in zip(self.reads, self.writes, strict=False)),
            "read_recurrent_layers",
            self.read_recurrent_layers,
            f"must pair each of recurrent_layers={self.writes} with a layer 1 .. that layer",
        )
        if self.use_compressed_mem:
            check_int("compressed_mem_factor", self.compressed_mem_factor, min_value=2)
            check(
                self.block_width % self.compressed_mem_factor == 0,
                "compressed_mem_factor",
                self.compressed_mem_factor,
                f"must divide block_width={self.block_width}",
            )
        check_choice("gate", self.gate, GATES)
        check_choice("state_cell", self.state_cell, STATE_CELLS)
        for name in ("use_compressed_mem", "use_flash_attn", "use_xpos", "all_layers_qk_norm"):
            check(
                isinstance(getattr(self, name), bool), name, getattr(self, name), "must be a bool"
            )
        if self.qk_norm_scale is not None:
            check_float("qk_norm_scale", self.qk_norm_scale, 0.0, low_inclusive=False)
        check_choice("qk_norm_order", self.qk_norm_order, QK_NORM_ORDERS)

    @property
    def state_vectors(self) -> int:
        return self.block_width if self.num_state_vectors is None else self.num_state_vectors

    @property
    def writes(self) -> list[int]:
        """The recurrent layers (1-based)."""
        if self.recurrent_layers is None:
            return [max(1, self.depth // 2)]
        return list(self.recurrent_layers)

    @property
    def reads(self) -> list[int]:
        """Where each recurrent layer's states are read (1-based)."""
        return (
            self.writes if self.read_recurrent_layers is None else list(self.read_recurrent_layers)
        )


class BlockRecurrentTransformer(nn.Module):
    """Byte/token language model; ``out, mems, states = model(seq, xl_memories=mems,
    states=states)`` carries memories and states from one call to the next (returned
    detached); ``return_loss=True`` returns the mean next-token cross-entropy instead of
    the logits (``seq`` then holds one token more than it predicts).

    ``BlockRecurrentTransformer(num_tokens, cfg)``, or with the package's keyword
    arguments, ``BlockRecurrentTransformer(num_tokens=256, dim=..., depth=...)``: the
    fields of ``BlockRecurrentConfig``.
    """

    def __init__(
        self, num_tokens: int = 256, cfg: BlockRecurrentConfig | None = None, **fields
    ) -> None:
        super().__init__()
        check_positive_int("num_tokens", num_tokens)
        check(
            cfg is None or not fields,
            "cfg",
            cfg,
            "give a BlockRecurrentConfig or its fields as keyword arguments, not both",
        )
        self.cfg = cfg = BlockRecurrentConfig(**fields) if cfg is None else cfg
        dim, dim_head, heads, depth = cfg.dim, cfg.dim_head, cfg.heads, cfg.depth
        self.num_tokens, self.depth = num_tokens, depth
        self.max_seq_len, self.block_width = cfg.max_seq_len, cfg.block_width
        self.use_flash_attn = cfg.use_flash_attn
        self.ignore_index = cfg.ignore_index
        self.use_compressed_mem = cfg.use_compressed_mem
        self.compressed_mem_factor = cfg.compressed_mem_factor
        # 0-based: recurrent layer r writes at write_layer[r] and is read at read_layer[r]
        self.write_layer = [layer - 1 for layer in cfg.writes]
        self.read_layer = [layer - 1 for layer in cfg.reads]

        self.token_emb = nn.Embedding(num_tokens, dim)
        self.rotary = Rotary(dim_head, xpos=cfg.use_xpos)
        self.layers = nn.ModuleList(
            BlockRecurrentLayer(
                dim,
                heads,
                dim_head,
                cfg.ff_mult,
                qk_norm=cfg.all_layers_qk_norm or i in self.write_layer,
                num_reads=self.read_layer.count(i),
                qk_norm_scale=cfg.qk_norm_scale,
                qk_norm_order=cfg.qk_norm_order,
            )
            for i in range(depth)
        )
        self.cells = nn.ModuleList(
            StateCell(
                dim,
                heads,
                dim_head,
                cfg.state_vectors,
                cfg.gate,
                cfg.qk_norm_scale,
                state_cell=cfg.state_cell,
                ff_mult=cfg.ff_mult,
            )
            for _ in cfg.writes
        )
        if cfg.use_compressed_mem:
            # (B, 2*Dh, n) -> (B, 2*Dh, n / factor): keys and values compressed separately
            f = cfg.compressed_mem_factor
            self.compressors = nn.ModuleList(
                nn.Conv1d(2 * dim_head, 2 * dim_head, f, stride=f, groups=2) for _ in range(depth)
            )
        self.to_logits = nn.Sequential(
            nn.LayerNorm(dim, bias=False), nn.Linear(dim, num_tokens, bias=False)
        )

    # -- what a token can see ---------------------------------------------------------
    @property
    def compressed_mem_length(self) -> int:
        """Compressed memory slots per layer (the reference's ``block_width // 2``)."""
        return self.block_width // 2 if self.use_compressed_mem else 0

    @property
    def attention_reach(self) -> int:
        """How far back (in tokens) a prediction can see without the states: its own
        block, plus in every layer one XL memory (and what the compressed memory
        summarises), since layer l's memory holds keys that layer l-1 computed while
        attending to its own memory (Transformer-XL's receptive field grows with depth).
        A token at least this far behind the predicting position is out of attention's
        reach; only the recurrent states can carry it."""
        w = self.block_width
        span = w + self.compressed_mem_length * self.compressed_mem_factor
        return w + self.depth * span

    # -- the stream ---------------------------------------------------------------------
    def new_cache(self, batch: int, xl_memories=None, states=None) -> RecurrentCache:
        memories = list(xl_memories) if xl_memories else [None] * self.depth
        check(
            len(memories) == self.depth,
            "xl_memories",
            f"{len(memories)} layers",
            f"must hold one memory per layer ({self.depth})",
        )
        if states:
            states = list(states)
            check(
                len(states) == len(self.cells),
                "states",
                f"{len(states)} tensors",
                f"must hold one per recurrent layer ({len(self.cells)})",
            )
        else:
            states = [cell.initial(batch) for cell in self.cells]
        cache = RecurrentCache(memories, states)
        self._open_block(cache)
        return cache

    def _open_block(self, cache: RecurrentCache) -> None:
        """Start a block: rotate the memory's keys (positions 0 .. M-1), prepare states."""
        M = cache.memory_length
        cache.filled = 0
        cache.keys, cache.values, cache.block_k = [], [], []
        tables = self.rotary.tables(0, M) if M else None
        for layer, mem in zip(self.layers, cache.memories, strict=True):
            if mem is None:
                cache.keys.append(None)
                cache.values.append(None)
            else:
                cache.keys.append(layer.rotate_keys(mem[0], tables))
                cache.values.append(mem[1])
            cache.block_k.append(None)
        cache.prepared = [cell.prepare(s) for cell, s in zip(self.cells, cache.states, strict=True)]

    def _close_block(self, cache: RecurrentCache) -> None:
        """A block is complete: states written from its keys/values, memories shifted."""
        w = self.block_width
        cache.states = [
            cell.write(cache.prepared[r], cache.block_k[layer], cache.values[layer][:, -w:])
            for r, (cell, layer) in enumerate(zip(self.cells, self.write_layer, strict=True))
        ]
        cache.memories = [
            self._next_memory(i, mem, torch.stack([k, v[:, -w:]]))
            for i, (mem, k, v) in enumerate(
                zip(cache.memories, cache.block_k, cache.values, strict=True)
            )
        ]
        self._open_block(cache)

    def _next_memory(self, layer: int, mem, new: torch.Tensor) -> torch.Tensor:
        """[compressed | XL] memory after a block: the block becomes the XL memory; with
        compression, the XL memory it replaces is compressed onto the compressed part."""
        if not self.use_compressed_mem or mem is None:
            return new
        w = self.block_width
        old_compressed, old_xl = mem[:, :, :-w], mem[:, :, -w:]
        two, B, _, Dh = old_xl.shape
        # (2, B, w, Dh) -> (B, 2*Dh, w) -> conv -> (B, 2*Dh, w/f) -> (2, B, w/f, Dh)
        x = old_xl.permute(1, 0, 3, 2).reshape(B, 2 * Dh, w)
        squeezed = self.compressors[layer](x).view(B, 2, Dh, -1).permute(1, 0, 3, 2)
        compressed = torch.cat([old_compressed, squeezed], dim=2)[
            :, :, -self.compressed_mem_length :
        ]
        return torch.cat([compressed, new], dim=2)

    def _attention_context(self):
        if self.use_flash_attn:
            return nullcontext()  # SDPA picks its fused kernels
        return sdpa_kernel(SDPBackend.MATH)

    def _piece(self, x: torch.Tensor, cache: RecurrentCache) -> torch.Tensor:
        """Embedded tokens ``x (B, n, D)`` that fit in the current block -> (B, n, D)."""
        n = x.shape[1]
        start = cache.memory_length + cache.filled  # the first new token's position
        tables = self.rotary.tables(start, start + n)  # each (n, Dh)
        mask = causal_mask(n, start + n, x.device)  # every layer sees memory + block so far
        for i, layer in enumerate(self.layers):
            reads = tuple(
                (self.cells[r], cache.prepared[r])
                for r, read_at in enumerate(self.read_layer)
                if read_at == i
            )
            x, k, cache.keys[i], cache.values[i] = layer(
                x, tables, cache.keys[i], cache.values[i], mask, reads
            )  # keys / values: (B, M + filled + n, Dh)
            cache.block_k[i] = (
                k if cache.block_k[i] is None else torch.cat([cache.block_k[i], k], 1)
            )
        cache.filled += n
        return x

    def run(self, tokens: torch.Tensor, cache: RecurrentCache) -> torch.Tensor:
        """Feeds ``tokens (B, n)`` through the stream, block by block -> logits (B, n, V)."""
        outs = []
        x = self.token_emb(tokens)
        with self._attention_context():
            i = 0
            while i < x.shape[1]:
                take = min(self.block_width - cache.filled, x.shape[1] - i)
                outs.append(self._piece(x[:, i : i + take], cache))
                i += take
                if cache.filled == self.block_width:
                    self._close_block(cache)
        return self.to_logits(torch.cat(outs, dim=1))

    def forward(
        self,
        seq: torch.Tensor,
        xl_memories: list | None = None,
        states: list | None = None,
        return_loss: bool = False,
    ):
        """``seq (B, n)`` -> ``(logits (B, n, V) or loss, memories, states)``."""
        if return_loss:
            seq, labels = seq[:, :-1], seq[:, 1:]
        check(
            seq.dim() == 2 and 0 < seq.shape[1] <= self.max_seq_len,
            "seq",
            f"shape {tuple(seq.shape)}",
            f"must be (batch, n) with 1 <= n <= max_seq_len={self.max_seq_len}"
            + (" (+1 with return_loss)" if return_loss else ""),
        )
        cache = self.new_cache(seq.shape[0], xl_memories, states)
        logits = self.run(seq, cache)
        memories = [None if m is None else m.detach() for m in cache.memories]
        next_states = [s.detach() for s in cache.states]
        if not return_loss:
            return logits, memories, next_states
        loss = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=self.ignore_index)
        return loss, memories, next_states

    @torch.no_grad()
    def generate(
        self,
        prime: torch.Tensor,
        length: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        xl_memories: list | None = None,
        states: list | None = None,
        generator: torch.Generator | None = None,
        strategy: str = "sample",
        beams: int = 3,
    ) -> torch.Tensor:
        """``length`` new tokens after ``prime (B, n)`` -> ``(B, length)``, one at a time
        through the cache (each token costs one token's work); ``strategy`` and the rest:
        ``lit_loops.nn.sampling.generate`` (``temperature`` 0: greedy)."""
        if top_k is not None:
            check_int("top_k", top_k, min_value=1, max_value=self.num_tokens)
        was_training = self.training
        self.eval()
        try:
            decoder = RecurrentDecoder(self, self.new_cache(prime.shape[0], xl_memories, states))
            out = generate(decoder, prime, length, strategy, temperature, top_k, beams, generator)
        finally:
            self.train(was_training)
        return out[:, prime.shape[1] :]


class RecurrentDecoder:
    """Next-token logits for a growing sequence through a ``RecurrentCache`` (the decoder
    of ``lit_loops.nn.sampling``): the prompt once, then one token at a time."""

    def __init__(self, model: BlockRecurrentTransformer, cache: RecurrentCache) -> None:
        self.model, self.cache = model, cache

    def first(self, seq: torch.Tensor) -> torch.Tensor:
        return self.model.run(seq, self.cache)[:, -1]

    def next(self, seq: torch.Tensor) -> torch.Tensor:
        return self.model.run(seq[:, -1:], self.cache)[:, -1]

    def reorder(self, index: torch.Tensor) -> None:
        self.cache.reorder(index)


class RecurrentTrainerWrapper(nn.Module):
    """Trains on samples longer than one call: ``seq (B, k * max_seq_len + 1)`` is split
    into k segments, memories and states carried (detached: truncated backpropagation
    through time) from segment to segment, and dropped at random in training
    (``xl_memories_dropout``, ``state_dropout``: the model must also cope without them).
    ``carry_memories=False`` never carries the XL memories across a segment boundary, in
    training and evaluation alike: with ``recurrent_layers=[]`` that is the paper's
    sliding-window baseline (each block still attends to the block before it inside a
    segment; a segment starts with no memory). ``forward`` returns the mean of the
    segments' losses."""

    def __init__(
        self,
        transformer: BlockRecurrentTransformer,
        xl_memories_dropout: float = 0.0,
        state_dropout: float = 0.0,
        carry_memories: bool = True,
    ) -> None:
        super().__init__()
        check(isinstance(carry_memories, bool), "carry_memories", carry_memories, "must be a bool")
        for name, p in (
            ("xl_memories_dropout", xl_memories_dropout),
            ("state_dropout", state_dropout),
        ):
            check(0.0 <= p <= 1.0, name, p, "must be a probability in [0, 1]")
        self.transformer = transformer
        self.seq_len = transformer.max_seq_len
        self.xl_memories_dropout = xl_memories_dropout
        self.state_dropout = state_dropout
        self.carry_memories = carry_memories

    def segments(self, seq: torch.Tensor) -> int:
        n = seq.shape[1] - 1
        check(
            n > 0 and n % self.seq_len == 0,
            "sample length",
            seq.shape[1],
            f"must be a multiple of max_seq_len={self.seq_len}, plus 1",
        )
        return n // self.seq_len

    def segment_logits(self, seq: torch.Tensor, generator: torch.Generator | None = None):
        """Yields ``(logits (B, L, V), targets (B, L), segment index)`` per segment; the
        carry between segments is detached, so each segment's loss can be backpropagated
        on its own (the same gradients, one segment's activations in memory)."""
        memories, states = None, None
        for s in range(self.segments(seq)):
            piece = seq[:, s * self.seq_len : (s + 1) * self.seq_len + 1]
            if self.training:
                drops = torch.rand(2, generator=generator)
                if drops[0] < self.xl_memories_dropout:
                    memories = None
                if drops[1] < self.state_dropout:
                    states = None
            if not self.carry_memories:
                memories = None
            logits, memories, states = self.transformer(piece[:, :-1], memories, states)
            yield logits, piece[:, 1:], s

    def forward(self, seq: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        losses = [
            F.cross_entropy(
                logits.transpose(1, 2), targets, ignore_index=self.transformer.ignore_index
            )
            for logits, targets, _ in self.segment_logits(seq, generator)
        ]
        return torch.stack(losses).mean()

    def generate(self, prime: torch.Tensor, length: int, **kwargs) -> torch.Tensor:
        """Generation needs no segments: the cache carries memories and states on."""
        return self.transformer.generate(prime, length, **kwargs)
