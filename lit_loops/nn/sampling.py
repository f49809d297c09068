"""Autoregressive decoding, one module for every generator in the suite.

``generate(decoder, prompt, max_new_tokens, strategy=...)``:

* ``greedy``: the most likely token each step;
* ``sample``: softmax sampling at ``temperature``, from the ``top_k`` most likely tokens
  (all when None), drawn from ``generator``; temperature 0 is greedy;
* ``beam``: width ``beams``, the continuation of highest total log-probability.

A decoder turns a growing sequence into next-token logits and keeps whatever cache makes
each new token cost one token's work: ``first(seq) -> (B, V)`` for the prompt,
``next(seq) -> (B, V)`` after a token was appended, ``reorder(index)`` to follow beam
search's choice of rows. ``CachedDecoder`` serves any ``TransformerWrapper`` (KV cache);
the Block-Recurrent Transformer has its own (memories and states).
"""

from __future__ import annotations

from typing import Protocol

import torch

from lit_loops.checks import check, check_choice, check_float, check_int, check_positive_int

STRATEGIES = ("greedy", "sample", "beam")


class Decoder(Protocol):
    def first(self, seq: torch.Tensor) -> torch.Tensor: ...

    def next(self, seq: torch.Tensor) -> torch.Tensor: ...

    def reorder(self, index: torch.Tensor) -> None: ...


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """logits (B, V) -> tokens (B, 1): greedy at temperature 0, else softmax sampling
    from the ``top_k`` most likely (all with None)."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator)


@torch.no_grad()
def generate(
    decoder: Decoder,
    prompt: torch.Tensor,
    max_new_tokens: int,
    strategy: str = "greedy",
    temperature: float = 1.0,
    top_k: int | None = None,
    beams: int = 3,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``(B, P)`` prompt -> ``(B, P + max_new_tokens)`` (see the module docs)."""
    check_choice("strategy", strategy, STRATEGIES)
    check_int("max_new_tokens", max_new_tokens, min_value=0)
    check(prompt.dim() == 2 and prompt.shape[1] >= 1, "prompt", tuple(prompt.shape), "(B, P>=1)")
    check_float("temperature", temperature, 0.0)
    if top_k is not None:
        check_positive_int("top_k", top_k)
    if strategy == "beam":
        check_positive_int("beams", beams)
        return beam_search(decoder, prompt, max_new_tokens, beams)
    if strategy == "greedy":
        temperature = 0.0
    seq = prompt
    logits = decoder.first(seq)
    for _ in range(max_new_tokens):
        seq = torch.cat([seq, sample_next(logits, temperature, top_k, generator)], dim=1)
        logits = decoder.next(seq)
    return seq


def beam_search(
    decoder: Decoder, prompt: torch.Tensor, max_new_tokens: int, beams: int
) -> torch.Tensor:
    """The best of ``beams`` beams per row: ``(B, P) -> (B, P + max_new_tokens)``."""
    B = prompt.shape[0]
    rows = torch.arange(B, device=prompt.device).repeat_interleave(beams)
    seq = prompt[rows]  # (B*k, P): each prompt k times
    decoder.reorder(rows)  # a cache made for the B prompts (memories, states) follows
    score = torch.full((B, beams), float("-inf"), device=prompt.device)
    score[:, 0] = 0.0  # the k copies start as one beam
    logp = torch.log_softmax(decoder.first(seq), dim=-1)  # (B*k, V)
    V = logp.shape[-1]
    for _ in range(max_new_tokens):
        total = score.reshape(B * beams, 1) + logp  # (B*k, V)
        best, idx = total.view(B, beams * V).topk(beams, dim=-1)  # (B, k)
        parent = idx // V + torch.arange(B, device=seq.device)[:, None] * beams
        parent = parent.reshape(-1)  # (B*k,) rows of seq to extend
        seq = torch.cat([seq[parent], (idx % V).reshape(-1, 1)], dim=1)
        decoder.reorder(parent)
        score = best
        logp = torch.log_softmax(decoder.next(seq), dim=-1)
    return seq.view(B, beams, -1)[:, 0]  # topk keeps beams sorted: the best is first


class CachedDecoder:
    """Next-token logits of a ``TransformerWrapper`` for a growing sequence, with its KV
    cache or without (the same numbers). Once the sequence fills the model's ``max_len``
    positions, the window slides: the last ``max_len`` tokens are re-encoded from
    position 0 for every further token (what an uncached model does all along)."""

    def __init__(self, model, use_cache: bool = True) -> None:
        self.model, self.use_cache = model, use_cache
        self.cache = model.new_cache() if use_cache else None

    def first(self, seq: torch.Tensor) -> torch.Tensor:
        check(
            seq.shape[1] <= self.model.max_len,
            "prompt",
            tuple(seq.shape),
            f"must have at most max_len={self.model.max_len} terms",
        )
        return self.model(seq, cache=self.cache)[:, -1]

    def next(self, seq: torch.Tensor) -> torch.Tensor:
        T, max_len = seq.shape[1], self.model.max_len
        if self.cache is not None and T <= max_len:
            return self.model(seq[:, -1:], cache=self.cache, start=T - 1)[:, -1]
        self.cache = None  # past the positions: slide the window, no cache from here on
        return self.model(seq[:, -min(T, max_len) :])[:, -1]

    def reorder(self, index: torch.Tensor) -> None:
        if self.cache is not None:
            self.cache.reorder(index)
