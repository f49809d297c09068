"""The compiled SUBLEQ machine: hand-set weights of a transformer that executes one step
exactly on the bit-matrix format of ``machine.py``, after Giannou et al. 2023 ("Looped
Transformers as Programmable Computers", arXiv 2301.13196). Looped on its own output (the
rollout harness does that), it runs whole programs.

The network is the trained encoder's own architecture, ``module.state_encoder`` (a
``VectorReadIn``, 4 ``lit_loops.nn`` blocks on ``F.scaled_dot_product_attention`` with
ReLU MLPs, a linear read-out), with ``norm="none"``: a LayerNorm would rescale each row by
its own statistics and break the exact arithmetic below, so the blocks are plain
residual ``x + attn(x)``, ``x + mlp(x)``. ``compiled_config(spec)`` is that network's size,
``compile_weights`` sets every weight, ``build_compiled`` does both.

The residual stream (``layout``) is the ``d`` columns of the state (the read-in copies
them, in units of +-1), then work columns of the construction:

====== ============ ===================================================================
column width        holds (only token 0's value matters unless said otherwise)
====== ============ ===================================================================
inst   3 log n      the instruction ``(a, b, c)`` at the PC, +-1 bits (layer 1)
nxt    log n        the instruction after the PC's, +-1 bits (layer 1)
table  log n        per token ``t``, the bits of ``next(t)`` (the read-in's position
                    embedding: the one static table)
ma, mb N each       ``mem[a]``, ``mem[b]``, +-1 bits (layer 2)
bcopy  log n        ``b`` on every token, +-1 bits (layer 2)
res    N            the new ``mem[b]``, 0/1 bits (MLP 2)
taken  1            1 when the new ``mem[b] <= 0`` (MLP 2)
miss   1            every token: Hamming distance of its position to ``b`` (MLP 2)
rcopy  N            the new ``mem[b]`` on every token, 0/1 bits (layer 3)
====== ============ ===================================================================

The four blocks:

0. error correction (Giannou et al. end each loop with it; here it opens the step): the
   MLP snaps every scored column to exactly +-1, ``x + [relu(4x + 1) - relu(4x - 1) - 1] -
   [relu(x) - relu(-x)]`` (4 units a column: ``sign(x)`` wherever ``|x| >= 1/4``), so
   inputs within 0.75 of +-1 give the exact step, and so does the network's own raw
   output (+-``logit_scale``) fed back without quantizing. No attention.
1. attention (hard, by position): token 0's query is the PC field, every key the position
   field: token 0 reads the PC token's instruction field and ``next`` table. MLP: none.
2. attention, 3 heads: token 0 reads ``mem[a]`` and ``mem[b]`` (queries ``a`` and ``b``);
   every token reads ``b`` from token 0 (a constant query that matches position 0). MLP:
   the N-bit two's-complement difference ``mem[b] - mem[a]`` bit by bit, the branch test,
   and each token's distance to ``b``, from ReLU steps ``[y >= t] = relu(y - t + 1) -
   relu(y - t)`` on integers ``y`` (6 units a bit: the lower ``k + 1`` bits of the
   difference decide bit ``k``).
3. attention: every token copies the result from token 0. MLP: token ``b`` replaces its
   memory field by the result (gated by ``miss``: ``relu(new - old - 2 miss) - relu(old -
   new - 2 miss)``), token 0 sets the PC to ``c`` or ``next`` (gated by ``taken`` and by
   the popcount of the position, 0 on token 0 only).

The read-out copies the ``d`` state columns back (times ``logit_scale``): every field a
step does not write passes through the residual stream unchanged, the work area included.
The attention is hard through a large scale (``ATTENTION_SCALE`` on +-1 dot products: the
best key leads the next by ``2 * ATTENTION_SCALE``), so the weight a read gives every
other token is below ``e^-60``; all other arithmetic is on small integers, exact in
float32. float64 is not needed (``build_compiled(dtype=...)`` takes it, for the checks).

Inputs must be valid states (``machine.check_state``); on others the output is defined
but not a step.
"""

from __future__ import annotations

import math

import torch

from lit_loops.checks import check, fail
from lit_loops.experiments.subleq.machine import MachineSpec
from lit_loops.nn import TransformerConfig, TransformerWrapper

ATTENTION_SCALE = 30.0  # hard attention: a +-1 dot product is multiplied by this
N_HEADS = 3  # layer 2 reads mem[a], mem[b] and broadcasts b
SNAP_GAIN = 4.0  # error correction: |x| >= 1 / SNAP_GAIN snaps to sign(x)


def layout(spec: MachineSpec) -> dict[str, slice]:
    """The residual stream's columns: ``state`` (the ``d`` columns of the bit matrix),
    then the construction's work columns (see the module docs), ``{name: slice}``."""
    L, N = spec.log_n, spec.N
    widths = [
        ("state", spec.d),
        ("inst", 3 * L),
        ("nxt", L),
        ("table", L),
        ("ma", N),
        ("mb", N),
        ("bcopy", L),
        ("res", N),
        ("taken", 1),
        ("miss", 1),
        ("rcopy", N),
    ]
    out, start = {}, 0
    for name, width in widths:
        out[name] = slice(start, start + width)
        start += width
    return out


def cleaned_columns(spec: MachineSpec) -> list[int]:
    """The state columns the error correction snaps: all but the work area (never read)."""
    work = spec.field_slices["work"]
    return [c for c in range(spec.d) if not work.start <= c < work.stop]


def stream_width(spec: MachineSpec) -> int:
    """``d_model``: the layout's width, rounded up to a multiple of the head count."""
    used = layout(spec)["rcopy"].stop
    return -(-used // N_HEADS) * N_HEADS


def compiled_config(spec: MachineSpec) -> TransformerConfig:
    """The network's size for ``spec``: 4 blocks, 3 heads, no norm, ReLU MLPs."""
    d_mlp = max(
        4 * len(cleaned_columns(spec)),
        6 * spec.N + 6 + 2 * spec.log_n,
        2 * spec.N + 4 * spec.log_n,
    )
    return TransformerConfig(
        d_model=stream_width(spec),
        n_layers=4,
        n_heads=N_HEADS,
        d_mlp=d_mlp,
        norm="none",
        activation="relu",
    )


def next_instruction(spec: MachineSpec, t: int) -> int:
    """The instruction token after token ``t`` (the program is a ring)."""
    return spec.inst_start + (t - spec.inst_start + 1) % spec.num_instructions


def _bits(x: int, width: int) -> list[int]:
    """``x`` as ``width`` bits, MSB first (the encoding's order)."""
    return [(x >> (width - 1 - i)) & 1 for i in range(width)]


def _cols(s: slice) -> list[int]:
    return list(range(s.start, s.stop))


class _Block:
    """Index helpers for one ``lit_loops.nn`` block's weights (see ``SelfAttention``:
    ``qkv`` rows are ``[q | k | v]``, each head-major; ``out`` columns are head-major)."""

    def __init__(self, block, D: int) -> None:
        self.block, self.D, self.dh = block, D, D // N_HEADS
        self.qkv_w, self.qkv_b = block.attn.qkv.weight, block.attn.qkv.bias
        self.out_w = block.attn.out.weight
        self.up_w, self.up_b = block.mlp.up.weight, block.mlp.up.bias
        self.down_w, self.down_b = block.mlp.down.weight, block.mlp.down.bias
        # SDPA scales q.k by 1 / sqrt(d_head): the query carries sqrt(d_head) * scale
        self.q_gain = ATTENTION_SCALE * math.sqrt(self.dh)

    def row(self, part: str, head: int, j: int) -> int:
        return {"q": 0, "k": 1, "v": 2}[part] * self.D + head * self.dh + j

    def match(self, head: int, query_cols: list[int] | None, key_cols: list[int]) -> None:
        """Head ``head`` attends, from each token, to the token whose ``key_cols`` equal
        its ``query_cols`` (+-1 bits); ``None``: a constant query that matches all bits
        -1 (position 0)."""
        for j, kc in enumerate(key_cols):
            if query_cols is None:
                self.qkv_b[self.row("q", head, j)] = -self.q_gain
            else:
                self.qkv_w[self.row("q", head, j), query_cols[j]] = self.q_gain
            self.qkv_w[self.row("k", head, j), kc] = 1.0

    def copy(self, head: int, src_cols: list[int], dst_cols: list[int], j0: int = 0) -> None:
        """Head ``head``'s value dims ``j0..`` carry ``src_cols`` of the token it attends
        to, written (added) to ``dst_cols`` of the reading token."""
        for j, (sc, dc) in enumerate(zip(src_cols, dst_cols, strict=True)):
            self.qkv_w[self.row("v", head, j0 + j), sc] = 1.0
            self.out_w[dc, head * self.dh + j0 + j] = 1.0


class _Units:
    """Allocates an MLP's hidden units: ``add({col: weight}, bias, {out_col: weight})``
    makes ``out += weight * relu(sum(weight * x[col]) + bias)``."""

    def __init__(self, b: _Block) -> None:
        self.b, self.next = b, 0

    def add(self, inputs: dict[int, float], bias: float, outputs: dict[int, float]) -> None:
        u = self.next
        check(u < self.b.up_w.shape[0], "d_mlp", self.b.up_w.shape[0], "too small (a bug)")
        for col, w in inputs.items():
            self.b.up_w[u, col] += w
        self.b.up_b[u] = bias
        for col, w in outputs.items():
            self.b.down_w[col, u] += w
        self.next += 1

    def step(self, y: dict[int, float], t: float, outputs: dict[int, float]) -> None:
        """``out += w * [y >= t]`` for an integer-valued linear form ``y`` (2 units)."""
        self.add(y, 1.0 - t, outputs)
        self.add(y, -t, {c: -w for c, w in outputs.items()})


@torch.no_grad()
def compile_weights(model: TransformerWrapper, spec: MachineSpec, logit_scale: float = 1.0) -> None:
    """Set every weight of ``model`` (built by ``module.state_encoder`` with
    ``compiled_config(spec)`` and one loop) so that it maps ``encode(state) / scale`` to
    ``logit_scale * encode(step(state)) / scale`` on the scored fields (the work area keeps
    the input's). ``logit_scale``: the output's magnitude (1 for l1/l2/huber, larger for
    BCE's logits)."""
    cfg = compiled_config(spec)
    stack = model.stack
    check(
        stack.cfg == cfg and stack.loops == 1 and not stack.causal,
        "model",
        type(model).__name__,
        "must be state_encoder(compiled_config(spec), spec.d, spec.n, loops=1)",
    )
    check(logit_scale > 0, "logit_scale", logit_scale, "must be > 0")
    for p in model.parameters():
        p.zero_()
    D, L, N = cfg.d_model, spec.log_n, spec.N
    f, lay = spec.field_slices, layout(spec)
    pos, mem, pc = _cols(f["position"]), _cols(f["memory"]), _cols(f["pc"])
    inst = _cols(f["instruction"])
    a_cols, b_cols, c_cols = (_cols(lay["inst"])[i * L : (i + 1) * L] for i in range(3))

    # read-in: the state, and the next() table as the position embedding
    read_in = model.read_in
    read_in.proj.weight[: spec.d, : spec.d] = torch.eye(spec.d)
    for t in range(spec.inst_start, spec.n):
        bits = _bits(next_instruction(spec, t), L)
        read_in.pos_emb.weight[t, lay["table"]] = torch.tensor(bits, dtype=torch.float) * 2 - 1

    b0, b1, b2, b3 = (_Block(blk, D) for blk in stack.blocks)
    # 0. error correction: every scored column snapped to +-1 (delta 0 on exact +-1)
    units = _Units(b0)
    for col in cleaned_columns(spec):
        units.add({col: SNAP_GAIN}, 1.0, {col: 1.0})
        units.add({col: SNAP_GAIN}, -1.0, {col: -1.0})
        units.add({col: 1.0}, 0.0, {col: -1.0})
        units.add({col: -1.0}, 0.0, {col: 1.0})
        b0.down_b[col] = -1.0

    # 1. token 0 reads the instruction at the PC and the next() of the PC
    b1.match(0, pc, pos)
    b1.copy(0, inst + _cols(lay["table"]), _cols(lay["inst"]) + _cols(lay["nxt"]))

    # 2. read mem[a] and mem[b]; broadcast b
    b2.match(0, a_cols, pos)
    b2.copy(0, mem, _cols(lay["ma"]))
    b2.match(1, b_cols, pos)
    b2.copy(1, mem, _cols(lay["mb"]))
    b2.match(2, None, pos)
    b2.copy(2, b_cols, _cols(lay["bcopy"]))
    # MLP 2: bit i (LSB = 0) of a +-1 field sits at column start + N - 1 - i (MSB first);
    # as 0/1: (x + 1) / 2, so mb_i - ma_i = (MB_i - MA_i) / 2.
    ma, mb, res = _cols(lay["ma"]), _cols(lay["mb"]), _cols(lay["res"])
    units = _Units(b2)

    def diff_low(k: int) -> dict[int, float]:
        """y_k = sum_{i <= k} 2^i (mb_i - ma_i), an integer in (-2^(k+1), 2^(k+1))."""
        y: dict[int, float] = {}
        for i in range(k + 1):
            y[mb[N - 1 - i]] = 2.0 ** (i - 1)
            y[ma[N - 1 - i]] = -(2.0 ** (i - 1))
        return y

    for k in range(N):  # bit k of (mb - ma) mod 2^N: y_k in [2^k, 2^(k+1)) or [-2^k, 0)
        y, out = diff_low(k), {res[N - 1 - k]: 1.0}
        units.step(y, 2.0**k, out)
        units.step(y, -(2.0**k), out)
        units.step(y, 0.0, {res[N - 1 - k]: -1.0})
    # taken: wrap(mb - ma) <= 0 <=> the difference is in [-2^(N-1), 0] or [2^(N-1), 2^N)
    y, taken = diff_low(N - 1), lay["taken"].start
    units.step(y, -(2.0 ** (N - 1)), {taken: 1.0})
    units.step(y, 1.0, {taken: -1.0})
    units.step(y, 2.0 ** (N - 1), {taken: 1.0})
    # miss: sum_j |pos_j - b_j| in 0/1 units (every token; 0 only on token b)
    miss = lay["miss"].start
    for p, bc in zip(pos, _cols(lay["bcopy"]), strict=True):
        units.add({p: 0.5, bc: -0.5}, 0.0, {miss: 1.0})
        units.add({p: -0.5, bc: 0.5}, 0.0, {miss: 1.0})

    # 3. every token copies the result from token 0
    b3.match(0, None, pos)
    b3.copy(0, res, _cols(lay["rcopy"]))
    units = _Units(b3)
    gate = 2.0  # > any |new - old| (<= 1): a gate of 1 closes a unit
    # memory: token b's field += 2 (new - old), in +-1 units; old = (x + 1) / 2
    for mc, rc in zip(mem, _cols(lay["rcopy"]), strict=True):
        units.add({rc: 1.0, mc: -0.5, miss: -gate}, -0.5, {mc: 2.0})
        units.add({rc: -1.0, mc: 0.5, miss: -gate}, 0.5, {mc: -2.0})
    # PC (token 0 only: popcount(position) = sum (p + 1) / 2 is 0 there, >= 1 elsewhere):
    # += 2 (c - pc) when taken, 2 (next - pc) otherwise; all inputs as 0/1 = (x + 1) / 2
    popcount = {p: -gate * 0.5 for p in pos}
    popcount_bias = -gate * 0.5 * L
    for pcc, cc, nc in zip(pc, c_cols, _cols(lay["nxt"]), strict=True):
        for src, open_when_taken in ((cc, True), (nc, False)):
            # gate term: -gate * (1 - taken) or -gate * taken
            tw, tb = (gate, -gate) if open_when_taken else (-gate, 0.0)
            for sign in (1.0, -1.0):
                inputs = dict(popcount)
                inputs[src] = inputs.get(src, 0.0) + 0.5 * sign
                inputs[pcc] = inputs.get(pcc, 0.0) - 0.5 * sign
                inputs[taken] = tw
                units.add(inputs, popcount_bias + tb, {pcc: 2.0 * sign})

    # read-out: the state columns
    model.head.weight[:, : spec.d] = logit_scale * torch.eye(spec.d)


def build_compiled(
    spec: MachineSpec, logit_scale: float = 1.0, dtype: torch.dtype = torch.float32
) -> TransformerWrapper:
    """The compiled one-step network for ``spec``: ``(B, n, d)`` in units of +-1 ->
    ``(B, n, d)``, ``logit_scale`` times the next state's +-1 bits (work area: the
    input's)."""
    from lit_loops.experiments.subleq.module import state_encoder  # no import cycle

    check(isinstance(spec, MachineSpec), "spec", type(spec).__name__, "must be a MachineSpec")
    model = state_encoder(compiled_config(spec), spec.d, spec.n, loops=1).to(dtype)
    compile_weights(model, spec, logit_scale)
    return model.eval()


def spec_of(n_tokens: int, d_state: int, scale: float, machine: dict | None) -> MachineSpec:
    """The ``MachineSpec`` of a compiled model from the data-linked sizes and the
    ``machine`` dict (``s``, ``m`` and optionally ``N``); one clear ``ValueError`` when
    they are missing, invalid or disagree with ``n_tokens`` / ``d_state``."""
    if not isinstance(machine, dict) or not {"s", "m"} <= set(machine):
        fail("machine", machine, "must be a dict with the machine's s and m (kind compiled)")
    unknown = set(machine) - {"s", "m", "N"}
    if unknown:
        fail("machine", machine, f"has unknown keys {sorted(unknown)} (takes s, m, N)")
    log_n = int(n_tokens).bit_length() - 1
    N = (d_state - 5 * log_n - 1) // 3
    if "N" in machine:
        N = machine["N"]
    spec = MachineSpec(n=n_tokens, s=machine["s"], m=machine["m"], N=N, scale=scale)
    check(
        spec.d == d_state,
        "d_state",
        d_state,
        f"does not fit the machine {machine} with n={n_tokens}: d = 5 log n + 3N + 1 = {spec.d}",
    )
    return spec
