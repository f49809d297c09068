"""Our in-context-learning models against ones built on Hugging Face ``transformers``'
``GPT2Model`` the way Garg et al. (standard) and Yang et al. (looped) build theirs: a
linear read-in, ``GPT2Model(inputs_embeds=...)``, a linear read-out; the looped one calls
a 1-layer GPT2Model once per loop on ``output + embeds``, the loops before the last T
without gradient. Same shapes (128 wide, 4 heads, d = 20, 41 points, batch 64), same
Adam, one training step = forward + backward + optimizer step on a fixed batch.
``transformers`` is installed by ``make bench`` only.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from benchmarks.common import fmt, measure, ratio, summarise

D, POINTS, BATCH, WIDTH, HEADS = 20, 41, 64, 128, 4
STANDARD_LAYERS, LOOPS, WINDOW = 6, 12, 6


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


def ours(layers: int, loops: int = 1, window: int = 1) -> nn.Module:
    from lit_loops.experiments.icl.module import prompt_model
    from lit_loops.nn import TransformerConfig

    cfg = TransformerConfig(
        d_model=WIDTH, n_layers=layers, n_heads=HEADS, d_mlp=4 * WIDTH, activation="gelu"
    )
    model = prompt_model(cfg, D, POINTS)

    class Looped(nn.Module):  # the same call signature as GPT2Prompt
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, zs: torch.Tensor) -> list[torch.Tensor]:
            outs = self.model.passes(zs, loops, window if loops > 1 else None)
            return [out[:, ::2, 0] for out in outs]  # (B, 2n, 1) -> (B, n) at the x positions

    return Looped()


def train(which: str, looped: bool, steps: int = 3, warmup: int = 1) -> dict:
    torch.manual_seed(0)
    args = (1, LOOPS, WINDOW) if looped else (STANDARD_LAYERS,)
    model = GPT2Prompt(*args) if which == "gpt2" else ours(*args)
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
    step = sorted(times[warmup:])[len(times[warmup:]) // 2]
    # GPT2Model also holds a token embedding (50257 x 128) it never uses with inputs_embeds
    used = [p for n, p in model.named_parameters() if not n.endswith("wte.weight")]
    return {"steps_per_s": 1 / step, "params": sum(p.numel() for p in used)}


def run(repeats: int = 3, quick: bool = False) -> dict:
    r = 1 if quick else repeats
    out = {"settings": dict(d=D, points=POINTS, batch=BATCH, width=WIDTH, heads=HEADS,
                            standard_layers=STANDARD_LAYERS, loops=LOOPS, window=WINDOW)}  # fmt: skip
    for looped in (False, True):
        name = "looped" if looped else "standard"
        a = measure("benchmarks.icl", "train", r, which="ours", looped=looped)
        b = measure("benchmarks.icl", "train", r, which="gpt2", looped=looped)
        out[name] = {
            "ours": summarise(a, "steps_per_s"),
            "gpt2": summarise(b, "steps_per_s"),
            "params": {"ours": a[0]["params"], "gpt2": b[0]["params"]},
        }
        out[name]["ratio"] = ratio(out[name]["ours"], out[name]["gpt2"])
    return out


def markdown(out: dict) -> str:
    lines = [
        "| model | ours steps/s | GPT2Model steps/s | ratio | target |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, label in (
        ("standard", f"standard, {STANDARD_LAYERS} layers"),
        ("looped", f"looped, 1 layer, b = {LOOPS}, T = {WINDOW}"),
    ):
        o = out[name]
        lines.append(
            f"| {label} | {fmt(o['ours'])} | {fmt(o['gpt2'])} | {fmt(o['ratio'])} | >= 1.0 |"
        )
    return "\n".join(lines)
