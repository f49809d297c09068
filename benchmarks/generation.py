"""KV-cached against full-recompute decoding for the sequences model (the block-recurrent
figures are in its own section): greedy generation of 64 and 256 new tokens after a
64-token prompt, batch 1, the sequences CPU config's blocks (binary embedding, width 128,
4 layers, 4 heads, d_ff 512) with positions for the whole run (``max_seq_len`` 320). The
shipped sequence configs have a window of 8 terms: past it the model slides its window and
re-encodes (absolute learned positions), so there the cache only serves the first 8
tokens; this section measures the cache itself (``lit_loops/nn/attention.py``'s
``KVCache``, shared with every decoder here).
"""

from __future__ import annotations

import time

import torch

from benchmarks.common import fmt, interleaved, ratio, summarise

PROMPT, MAX_LEN = 64, 320


def generate(cached: bool, length: int) -> dict:
    from lit_loops.experiments.sequences.model import sequence_model
    from lit_loops.nn import TransformerConfig

    torch.manual_seed(0)
    cfg = TransformerConfig(d_model=128, n_layers=4, n_heads=4, d_mlp=512, activation="gelu")
    model = sequence_model(cfg, MAX_LEN, embedding="binary").eval()
    prompt = torch.randint(0, 256, (1, PROMPT))
    with torch.no_grad():
        model.generate(prompt[:, :8], 4, use_cache=cached)  # warm up the kernels
        t = time.perf_counter()
        out = model.generate(prompt, length, use_cache=cached)
        elapsed = time.perf_counter() - t
    return {"tokens_per_s": (out.shape[1] - PROMPT) / elapsed}


def run(repeats: int = 3, quick: bool = False) -> dict:
    r = 1 if quick else repeats
    out = {"settings": {"prompt": PROMPT, "max_seq_len": MAX_LEN, "batch": 1}}
    for n in (64, 256):
        got = interleaved(
            {
                "cached": ("benchmarks.generation", "generate", {"cached": True, "length": n}),
                "full": ("benchmarks.generation", "generate", {"cached": False, "length": n}),
            },
            r,
        )
        c, f = summarise(got["cached"], "tokens_per_s"), summarise(got["full"], "tokens_per_s")
        out[str(n)] = {"cached": c, "full": f, "ratio": ratio(c, f)}
    return out


def markdown(out: dict) -> str:
    lines = [
        "| sequences model, new tokens | cached tokens/s | full recompute tokens/s | ratio | target |",
        "| --- | --- | --- | --- | --- |",
    ]
    for n in ("64", "256"):
        o = out[n]
        target = ">= 5" if n == "256" else ""
        lines.append(
            f"| {n} | {fmt(o['cached'], 0)} | {fmt(o['full'], 0)} | {fmt(o['ratio'])} | {target} |"
        )
    return "\n".join(lines)
