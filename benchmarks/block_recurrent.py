"""Our Block-Recurrent Transformer against the reference package
(``block-recurrent-transformer-pytorch``, installed by ``make bench``, never a runtime
dependency), at the same settings: dim 256, depth 4, 4 heads of 64, max_seq_len 512,
blocks of 256, 256 states in layer 3, batch 4, samples of 2 segments, Adam 1e-4.

* training tokens/s and peak memory (the process's peak RSS; each contender in its own
  process). Ours backpropagates each segment as soon as its loss is known (the carry is
  detached, so the gradients are the same: tested), the reference one backward over both.
  Ours runs eager and compiled (``compile: true``: each layer compiled by
  ``torch.compile``, ``lit_loops.compile``); the compiled one's first steps trace and
  compile (its compile time is reported apart), and the timed steps come after them.
  The reference is measured as its users get it (``use_flash_attn=False``, its default:
  attention by einsum and softmax) and with ``use_flash_attn=True`` (SDPA, like ours);
* generation tokens/s: ours KV-cached, the reference's (a full forward over the segment so
  far per new token), and ours without the cache (a full forward per token, the same
  algorithm as the reference's) to show what the cache buys.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from benchmarks.common import (
    compile_times,
    fmt,
    fmt_compile,
    interleaved,
    peak_rss_mb,
    ratio,
    steady_and_warmup,
    summarise,
)

SETTINGS = dict(
    num_tokens=256,
    dim=256,
    depth=4,
    dim_head=64,
    heads=4,
    max_seq_len=512,
    block_width=256,
    num_state_vectors=256,
    recurrent_layers=(3,),
    use_flash_attn=True,
)
BATCH, SEGMENTS = 4, 2
TRAINERS = ("ours", "ours_compiled", "reference", "reference_flash")
COMPILED_WARMUP = 2  # the first step compiles the layers (with and without XL memory)


def build(which: str):
    """``ours``, ``ours_compiled`` (its layers compiled), ``reference`` (the package's
    defaults) or ``reference_flash``."""
    torch.manual_seed(0)
    settings = dict(SETTINGS)
    if which.startswith("reference"):
        settings["use_flash_attn"] = which == "reference_flash"
        from block_recurrent_transformer_pytorch import (
            BlockRecurrentTransformer,
            RecurrentTrainerWrapper,
        )
    else:
        from lit_loops.experiments.block_recurrent.model import (
            BlockRecurrentTransformer,
            RecurrentTrainerWrapper,
        )
    model = BlockRecurrentTransformer(**settings)
    if which == "ours_compiled":
        from lit_loops.compile import compile_network

        compile_network(model)
    return model, RecurrentTrainerWrapper(model)


def train(which: str, steps: int = 6, warmup: int | None = None) -> dict:
    """Training tokens/s (median step after ``warmup``: 1, or ``COMPILED_WARMUP``
    compiled), the warm-up's extra seconds (the compile time) and peak memory."""
    if warmup is None:
        warmup = COMPILED_WARMUP if which == "ours_compiled" else 1
    model, wrapper = build(which)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    seq = torch.randint(0, 256, (BATCH, SEGMENTS * SETTINGS["max_seq_len"] + 1))
    base = peak_rss_mb()
    times = []
    for _ in range(warmup + steps):
        t = time.perf_counter()
        if which.startswith("reference"):
            wrapper(seq).backward()
        else:  # per-segment backward, as BlockRecurrentModule trains
            for logits, targets, _ in wrapper.segment_logits(seq):
                (F.cross_entropy(logits.transpose(1, 2), targets) / SEGMENTS).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
    step, compile_s = steady_and_warmup(times, warmup)
    tokens = BATCH * SEGMENTS * SETTINGS["max_seq_len"]
    return {
        "tokens_per_s": tokens / step,
        "compile_s": compile_s,
        "peak_mb": peak_rss_mb(),
        "peak_above_model_mb": peak_rss_mb() - base,
        "params": sum(p.numel() for p in model.parameters()),
    }


def generate(which: str, prime: int = 64, length: int = 256, cached: bool = True) -> dict:
    """Generated tokens/s for ``length`` tokens after a ``prime``-token prompt, batch 1."""
    model, wrapper = build(which)
    model.eval()
    x = torch.randint(0, 256, (1, prime))
    t = time.perf_counter()
    with torch.no_grad():
        if which.startswith("reference"):
            out = wrapper.generate(x, prime + length)  # its length counts the prompt
        elif cached:
            out = model.generate(x, length, top_k=26)  # ~ its top-k filter (0.9 of 256)
        else:  # the reference's algorithm on our model: a full forward per new token
            seq = x
            for _ in range(length):
                start = (seq.shape[1] - 1) // model.max_seq_len * model.max_seq_len
                mems = states = None
                if start:  # the carry up to the current segment, as the reference keeps it
                    for s in range(0, start, model.max_seq_len):
                        _, mems, states = model(seq[:, s : s + model.max_seq_len], mems, states)
                logits, _, _ = model(seq[:, start:], mems, states)
                seq = torch.cat([seq, logits[:, -1:].argmax(-1)], dim=1)
            out = seq[:, prime:]
    elapsed = time.perf_counter() - t
    return {"tokens_per_s": out.shape[1] / elapsed, "generated": out.shape[1]}


def run(repeats: int = 3, quick: bool = False) -> dict:
    """All figures, side by side in one run (one core each, contenders taking turns)."""
    r = 1 if quick else repeats
    me = "benchmarks.block_recurrent"
    trained = interleaved({w: (me, "train", {"which": w}) for w in TRAINERS}, r)
    gen = {
        str(n): interleaved(
            {
                "ours_cached": (me, "generate", {"which": "ours", "length": n}),
                "ours_full": (me, "generate", {"which": "ours", "length": n, "cached": False}),
                "reference": (me, "generate", {"which": "reference", "length": n}),
            },
            r,
        )
        for n in (64, 256)
    }
    out = {
        "settings": {**SETTINGS, "batch": BATCH, "segments": SEGMENTS, "threads": 1},
        "train_tokens_per_s": {w: summarise(v, "tokens_per_s") for w, v in trained.items()},
        "peak_mb": {w: summarise(v, "peak_mb") for w, v in trained.items()},
        "compile_s": compile_times(trained["ours_compiled"]),
        "params": {w: v[0]["params"] for w, v in trained.items()},
        "generate_tokens_per_s": {
            n: {k: summarise(v, "tokens_per_s") for k, v in g.items()} for n, g in gen.items()
        },
    }
    t, p, g = out["train_tokens_per_s"], out["peak_mb"], out["generate_tokens_per_s"]
    out["ratios"] = {
        "train_speed": ratio(t["ours"], t["reference"]),
        "train_speed_vs_flash": ratio(t["ours"], t["reference_flash"]),
        "train_speed_compiled": ratio(t["ours_compiled"], t["reference"]),
        "train_speed_compiled_vs_flash": ratio(t["ours_compiled"], t["reference_flash"]),
        "compiled_vs_eager": ratio(t["ours_compiled"], t["ours"]),
        "peak_memory": ratio(p["ours"], p["reference"]),
        "peak_memory_vs_flash": ratio(p["ours"], p["reference_flash"]),
        **{
            f"generate_{n}_cached_vs_reference": ratio(g[n]["ours_cached"], g[n]["reference"])
            for n in g
        },
        **{
            f"generate_{n}_cached_vs_full": ratio(g[n]["ours_cached"], g[n]["ours_full"]) for n in g
        },
    }
    return out


NOTES = """
Where the time and memory go (measured with ``torch.profiler`` and
``saved_tensors_hooks`` on one training step at these settings, one thread): matrix
products take about 60 % of our step and SDPA's fused CPU attention (forward and backward)
about 30 %, in both implementations (the same FLOPs: the parameter counts are equal; the
reference with flash on calls the same kernels); the rest, about 10 %, is element-wise work
(rotary and xPos multiplies, the state gates, GELU, concatenations of the XL memories and
states, layer norms). Ours spends less on it than the reference (rotary tables computed
once, not per call; heads folded position-major into the query axis, a view, so no
copies), which is all of the 1.0-1.1x.

Compiled (each ``BlockRecurrentLayer`` a unit, compiled in a few variants: with and
without XL memory, with and without the state reads): inductor fuses about half of that
element-wise 10 % into its kernels, and adds about 3 % of guard checks and graph calls
(two per layer and block), so the compiled step is within a few per cent of the eager one
(0-7 % faster across quick runs, 0.98x in the run below); compiling takes about 30-40 s
from an empty cache (a few seconds from inductor's on-disk cache). Missed: >= 1.3x the reference. At 90 % matrix products and
attention that run the same kernels on the same FLOPs as the reference, no fusion can
reach it: even with every element-wise op free, ours would be about 1.15-1.2x its step. What
would close it: less attention work (every layer's causal mask over [XL memory | block]
is lower-right aligned, which SDPA's ``is_causal`` cannot express, so the fused kernel
computes the quarter of the block's score tiles that the explicit mask then drops: split
into a memory call without mask and a causal block call, merged by their log-sum-exps),
bf16 matrix products on a CPU with AMX or AVX512-BF16, or a GPU (``make bench-gpu``),
where launch overhead rather than arithmetic is what compiling removes.

Memory: saved activations per 512-token segment, 298 MB ours, 326 MB the reference's;
ours backpropagates each segment as soon as its loss is known (the carry between
segments is detached, so the gradients are the same), so one segment's activations are
alive instead of two. Against the reference's default (``use_flash_attn=False``, which
also keeps every attention matrix) the peak is about 0.63x; against its flash setting it is
about 0.78x, short of 0.7: about 310 MB of either process is torch, the model and Adam's
state, and the rest is one segment's activations (ours) against two (theirs), of which the
GEGLU feed-forward holds about 30 % (its 2 x 682-wide input, the GELU output and the
product, per token and layer). What would close it: recomputing the feed-forward in the
backward pass (activation checkpointing: about -90 MB, about +13 % step time by the FLOP
count) or bf16 activations; we kept the speed. Compiled, the peak is about 40 MB higher
(inductor's compiled kernels and their workspace). Generation (eager; the decoding path is
not what ``compile`` is for): 64 new tokens after a 64-token prompt gains less from the
cache than 256, because the prompt's own pass and the first tokens weigh more at that
length.
"""


TARGETS = {
    "train_speed": (">=", 1.3),
    "train_speed_vs_flash": (">=", 1.3),
    "peak_memory": ("<=", 0.7),
    "generate_256_cached_vs_reference": (">=", 10.0),
    "generate_256_cached_vs_full": (">=", 5.0),
}
LABELS = {
    "ours": "ours, eager",
    "ours_compiled": "ours, compiled",
    "reference": "reference, its default (flash off)",
    "reference_flash": "reference, flash on",
}


def verdict(value: dict, target: tuple[str, float]) -> str:
    """``>= 1.3 (met)`` / ``(**missed**)`` for a ratio's median."""
    op, bound = target
    ok = value["median"] >= bound if op == ">=" else value["median"] <= bound
    return f"{op} {bound:g} ({'met' if ok else '**missed**'})"


def markdown(out: dict) -> str:
    t, p, g, r = (
        out["train_tokens_per_s"],
        out["peak_mb"],
        out["generate_tokens_per_s"],
        out["ratios"],
    )
    c = out.get("compile_s") or {}
    c = c if "empty_cache" in c else c.get("ours_compiled")  # figures from before
    lines = [
        "| training | tokens/s | compile | / reference (flash off) | / reference (flash on) "
        "| peak memory (RSS, MB) | memory / reference (flash off) | target (speed; memory) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for w in TRAINERS:
        if w not in t:
            lines.append(f"| {LABELS[w]} | not measured | | | | | | |")
            continue
        speed = memory = target = compile_s = ""
        if w.startswith("ours"):
            suffix = "_compiled" if w == "ours_compiled" else ""
            default, flash = r[f"train_speed{suffix}"], r[f"train_speed{suffix}_vs_flash"]
            speed = f"{fmt(default)} | {fmt(flash)}"
            memory = fmt(ratio(p[w], p["reference"]))
            target = (
                f"{verdict(default, TARGETS['train_speed'])}, "
                f"{verdict(flash, TARGETS['train_speed_vs_flash'])}; "
                f"{verdict(ratio(p[w], p['reference']), TARGETS['peak_memory'])}"
            )
            if w == "ours_compiled":
                compile_s = fmt_compile(c)
        else:
            speed = " | "
        lines.append(
            f"| {LABELS[w]} | {fmt(t[w], 0)} | {compile_s} | {speed} | {fmt(p[w], 0)} | "
            f"{memory} | {target} |"
        )
    lines += [
        "",
        "| generation (batch 1, after a 64-token prompt) | ours KV-cached tokens/s | "
        "reference tokens/s | ours / reference | target |",
        "| --- | --- | --- | --- | --- |",
    ]
    for n in g:
        target = ">= 10" if n == "256" else ""
        lines.append(
            f"| {n} new tokens | {fmt(g[n]['ours_cached'], 1)} | {fmt(g[n]['reference'], 1)} "
            f"| {fmt(r[f'generate_{n}_cached_vs_reference'])} | {target} |"
        )
    lines += [
        "",
        "| KV-cached against full-recompute decoding (ours, batch 1) | cached tokens/s | "
        "full recompute tokens/s | ratio | target |",
        "| --- | --- | --- | --- | --- |",
    ]
    for n in g:
        target = ">= 5" if n == "256" else ""
        lines.append(
            f"| {n} new tokens | {fmt(g[n]['ours_cached'], 1)} | {fmt(g[n]['ours_full'], 1)} | "
            f"{fmt(r[f'generate_{n}_cached_vs_full'])} | {target} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    import json
    import sys

    result = run(quick="--quick" in sys.argv)
    print(json.dumps(result, indent=1))
    print(markdown(result))
