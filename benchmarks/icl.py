"""Our in-context-learning models against ones built on Hugging Face ``transformers``'
``GPT2Model`` the way Garg et al. (standard) and Yang et al. (looped) build theirs: a
linear read-in, ``GPT2Model(inputs_embeds=...)``, a linear read-out; the looped one calls
a 1-layer GPT2Model once per loop on ``output + embeds``, the loops before the last T
without gradient. Same shapes (128 wide, 4 heads, d = 20, 41 points, batch 64), same
Adam, one training step = forward + backward + optimizer step on a fixed batch; ours
eager and compiled (``compile: true``: its blocks compiled by ``torch.compile``,
``lit_loops.compile``; the first steps compile, their extra time is the compile time, and
the timed steps come after them). The contenders take turns, each repeat a fresh process
each. ``transformers`` is installed by ``make bench`` only.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from benchmarks.common import (
    compile_times,
    fmt,
    fmt_compile,
    interleaved,
    ratio,
    steady_and_warmup,
    summarise,
)

D, POINTS, BATCH, WIDTH, HEADS = 20, 41, 64, 128, 4
STANDARD_LAYERS, LOOPS, WINDOW = 6, 12, 6
CONTENDERS = ("ours", "ours_compiled", "gpt2")
TARGETS = {"standard": 1.3, "looped": 1.8}


class GPT2Prompt(nn.Module):
    """Garg et al.'s TransformerModel, and Yang et al.'s looped variant (``loops > 1``)."""

    def __init__(self, layers: int, loops: int = 1, window: int = 1) -> None:
        super().__init__()
        from transformers import GPT2Config, GPT2Model

        config = GPT2Config(
            n_positions=2 * POINTS,
            n_embd=WIDTH,
            n_layer=layers,
            n_head=HEADS,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            use_cache=False,
        )
        self.read_in = nn.Linear(D, WIDTH)
        self.backbone = GPT2Model(config)
        self.read_out = nn.Linear(WIDTH, 1)
        self.loops, self.window = loops, window

    def forward(self, zs: torch.Tensor) -> list[torch.Tensor]:
        embeds = self.read_in(zs)
        if self.loops == 1:
            out = self.backbone(inputs_embeds=embeds).last_hidden_state
            return [self.read_out(out)[:, ::2, 0]]
        out = torch.zeros_like(embeds)
        preds = []
        for i in range(self.loops):
            if i < self.loops - self.window:
                with torch.no_grad():
                    out = self.backbone(inputs_embeds=out + embeds).last_hidden_state
            else:
                out = self.backbone(inputs_embeds=out + embeds).last_hidden_state
                preds.append(self.read_out(out)[:, ::2, 0])
        return preds


def ours(layers: int, loops: int = 1, window: int = 1, compile: bool = False) -> nn.Module:
    from lit_loops.compile import compile_network
    from lit_loops.experiments.icl.module import prompt_model
    from lit_loops.nn import TransformerConfig

    cfg = TransformerConfig(
        d_model=WIDTH, n_layers=layers, n_heads=HEADS, d_mlp=4 * WIDTH, activation="gelu"
    )
    model = prompt_model(cfg, D, POINTS)
    if compile:
        compile_network(model)

    class Looped(nn.Module):  # the same call signature as GPT2Prompt
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, zs: torch.Tensor) -> list[torch.Tensor]:
            outs = self.model.passes(zs, loops, window if loops > 1 else None)
            return [out[:, ::2, 0] for out in outs]  # (B, 2n, 1) -> (B, n) at the x positions

    return Looped()


def train(which: str, looped: bool, steps: int = 3, warmup: int | None = None) -> dict:
    """Steps/s (1 / the median step after ``warmup``: 1, 2 compiled) and the warm-up's
    extra seconds (the compile time) of ``ours``, ``ours_compiled`` or ``gpt2``."""
    if warmup is None:
        warmup = 2 if which == "ours_compiled" else 1
    torch.manual_seed(0)
    args = (1, LOOPS, WINDOW) if looped else (STANDARD_LAYERS,)
    if which == "gpt2":
        model = GPT2Prompt(*args)
    else:
        model = ours(*args, compile=which == "ours_compiled")
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    zs = torch.randn(BATCH, 2 * POINTS, D)
    ys = torch.randn(BATCH, POINTS)
    times = []
    for _ in range(warmup + steps):
        t = time.perf_counter()
        preds = model(zs)
        loss = torch.stack([(p - ys).pow(2).mean() for p in preds]).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
    step, compile_s = steady_and_warmup(times, warmup)
    # GPT2Model also holds a token embedding (50257 x 128) it never uses with inputs_embeds
    used = [p for n, p in model.named_parameters() if not n.endswith("wte.weight")]
    return {"steps_per_s": 1 / step, "compile_s": compile_s, "params": sum(p.numel() for p in used)}


def run(repeats: int = 3, quick: bool = False) -> dict:
    r = 1 if quick else repeats
    out = {"settings": dict(d=D, points=POINTS, batch=BATCH, width=WIDTH, heads=HEADS,
                            standard_layers=STANDARD_LAYERS, loops=LOOPS, window=WINDOW)}  # fmt: skip
    for looped in (False, True):
        name = "looped" if looped else "standard"
        calls = {w: ("benchmarks.icl", "train", {"which": w, "looped": looped}) for w in CONTENDERS}
        results = interleaved(calls, r)
        o = out[name] = {w: summarise(results[w], "steps_per_s") for w in CONTENDERS}
        o["compile_s"] = compile_times(results["ours_compiled"])
        o["params"] = {"ours": results["ours"][0]["params"], "gpt2": results["gpt2"][0]["params"]}
        o["ratio"] = ratio(o["ours"], o["gpt2"])
        o["ratio_compiled"] = ratio(o["ours_compiled"], o["gpt2"])
    return out


NOTES = """
Where the time goes (``torch.profiler``, two steps of each, one thread). Standard: matrix
products take about 370 ms of our step (73 %), SDPA about 75 ms (15 %), GELU, layer norms,
adds and copies the rest; GPT2Model runs the same matrix products (about 375 ms) plus its
tanh-approximated GELU as separate multiplies, powers, adds and a tanh (about 180 ms, 27 %
of its step). Looped: matrix products about 475 ms of ours (72 %) and 471 ms of
GPT2Model's, SDPA about 95 ms, its GELU chain about 210 ms. Compiled (every block a unit:
one graph for the passes with gradient, one for those without, whatever the loop count):
inductor fuses GELU, the norms and the adds (about 7 % of our step) into its kernels, but
adds graph calls and twice eager's copies (about 20 ms a step more), so on this CPU the
compiled step is no faster than the eager one (0.88-1.0x in quick runs; compiling takes
about 14 s from an empty cache, 1.5 s cached).

Missed: looped >= 1.8x. The matrix products alone are about 475 ms of both models' steps,
so even with everything else free ours would be 828 / 475 = 1.74x GPT2Model's step: the
target needs fewer or faster matrix products, not less overhead (bf16 on a CPU with AMX or
AVX512-BF16, or a GPU: ``make bench-gpu``). Standard >= 1.3x is within reach in principle
(the same bound is about 1.8x) and lands at 1.1-1.35x across runs on this shared machine:
what separates us from GPT2Model is its unfused GELU, and what remains of ours is SDPA on
82-token prompts with heads of 32 (about 40 GFLOP/s, against about 100 for the matrix
products).
"""


def markdown(out: dict) -> str:
    lines = [
        "| model | ours steps/s, eager | ours, compiled | compile | GPT2Model steps/s | "
        "ours eager / GPT2Model | ours compiled / GPT2Model | target |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, label in (
        ("standard", f"standard, {STANDARD_LAYERS} layers"),
        ("looped", f"looped, 1 layer, b = {LOOPS}, T = {WINDOW}"),
    ):
        o, target = out[name], TARGETS[name]
        best = max(o["ratio"]["median"], o.get("ratio_compiled", {"median": 0})["median"])
        ok = "met" if best >= target else "**missed**"
        compiled = (
            f"{fmt(o['ours_compiled'])} | {fmt_compile(o['compile_s'])}"
            if "ours_compiled" in o
            else "not measured | "
        )
        ratio_c = fmt(o["ratio_compiled"]) if "ratio_compiled" in o else ""
        lines.append(
            f"| {label} | {fmt(o['ours'])} | {compiled} | {fmt(o['gpt2'])} | {fmt(o['ratio'])} | "
            f"{ratio_c} | >= {target} ({ok}) |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    import json
    import sys

    result = run(quick="--quick" in sys.argv)
    print(json.dumps(result, indent=1))
    print(markdown(result))
