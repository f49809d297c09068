"""The sequence model: embeddings of the design document, causal blocks, 256-way output,
and KV-cached generation (greedy, beam search, temperature sampling).

Embeddings (``embedding``), each followed by a linear read-in to ``d_model`` unless the
features already have that width:

* ``tuple`` (the document's choice): the fixed 2-vector ``(value / 255, position /
  max_position)``; with ``d_model = 2`` it *is* the residual stream, as in the document;
* ``learned``: a learned table of the 256 values plus learned positions;
* ``binary``: the value's 8 bits (±1, most significant first) and ``position /
  max_position``.

``forward(tokens: (B, T) long, cache=None, start=0) -> logits (B, T, 256)``; ``start`` is
the absolute position of ``tokens[:, 0]`` (non-zero when decoding with a cache).
"""

from __future__ import annotations

import torch
from torch import nn

from lit_loops.checks import check, check_choice, check_int, check_positive_int
from lit_loops.nn import Block, KVCache, Transformer, TransformerConfig

VOCAB = 256
EMBEDDINGS = ("tuple", "learned", "binary")
STRATEGIES = ("greedy", "beam", "sample")


class SequenceModel(nn.Module):
    def __init__(self, cfg: TransformerConfig, embedding: str = "tuple") -> None:
        super().__init__()
        check_choice("embedding", embedding, EMBEDDINGS)
        self.cfg, self.embedding = cfg, embedding
        self.max_len = cfg.max_seq_len
        if embedding == "learned":
            self.value_emb = nn.Embedding(VOCAB, cfg.d_model)
            self.pos_emb = nn.Embedding(cfg.max_seq_len, cfg.d_model)
            self.read_in = nn.Identity()
        else:
            n_features = 2 if embedding == "tuple" else 9
            fits = n_features == cfg.d_model
            self.read_in = nn.Identity() if fits else nn.Linear(n_features, cfg.d_model)
            # the 8 bits of every value, most significant first, as ±1: (256, 8)
            bits = (torch.arange(VOCAB)[:, None] >> torch.arange(7, -1, -1)) & 1
            self.register_buffer("bits", bits.float() * 2 - 1, persistent=False)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm_final = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, VOCAB)
        self.apply(Transformer._init_weights)

    def embed(self, tokens: torch.Tensor, start: int = 0) -> torch.Tensor:
        """``(B, T) -> (B, T, d_model)``."""
        T = tokens.shape[1]
        pos = torch.arange(start, start + T, device=tokens.device)
        if self.embedding == "learned":
            return self.value_emb(tokens) + self.pos_emb(pos)
        # position / max_position, the same for every row: (T,) -> (B, T, 1)
        where = (pos.float() / (self.max_len - 1)).expand(tokens.shape).unsqueeze(-1)
        if self.embedding == "tuple":
            features = torch.cat([tokens.unsqueeze(-1).float() / (VOCAB - 1), where], dim=-1)
        else:
            features = torch.cat([self.bits[tokens], where], dim=-1)  # (B, T, 9)
        return self.read_in(features)

    def forward(
        self, tokens: torch.Tensor, cache: KVCache | None = None, start: int = 0
    ) -> torch.Tensor:
        T = tokens.shape[1]
        check(
            start + T <= self.max_len,
            "sequence length",
            start + T,
            f"must not exceed the model's positions (max_len={self.max_len})",
        )
        x = self.embed(tokens, start)
        for layer, block in enumerate(self.blocks):
            x = block(x, cache, layer)
        return self.head(self.norm_final(x))  # (B, T, 256)

    def new_cache(self) -> KVCache:
        return KVCache(len(self.blocks))

    @torch.no_grad()
    def generate(
        self,
        prompt: torch.Tensor,
        max_new_tokens: int,
        strategy: str = "greedy",
        beams: int = 3,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """``(B, P)`` prompt -> ``(B, P + max_new_tokens)``.

        ``greedy`` (the document's choice), ``beam`` (width ``beams``: the highest total
        log-probability continuation) or ``sample`` (at ``temperature``, from
        ``generator``). With ``use_cache`` each new token costs one token's pass; once
        the sequence fills the model's ``max_len`` positions, the window slides: the
        last ``max_len - 1`` terms are re-encoded from position 0 for every further
        token (what an uncached model does all along), so both paths agree exactly.
        """
        check_choice("strategy", strategy, STRATEGIES)
        check_int("max_new_tokens", max_new_tokens, min_value=0)
        check(
            prompt.dim() == 2 and prompt.shape[1] >= 1, "prompt", tuple(prompt.shape), "(B, P>=1)"
        )
        check(
            prompt.shape[1] <= self.max_len,
            "prompt",
            tuple(prompt.shape),
            f"must have at most max_len={self.max_len} terms",
        )
        if strategy == "beam":
            check_positive_int("beams", beams)
            return self._beam(prompt, max_new_tokens, beams, use_cache)
        seq = prompt
        step = _Stepper(self, use_cache)
        logits = step.first(seq)
        for _ in range(max_new_tokens):
            if strategy == "greedy":
                nxt = logits.argmax(-1)
            else:
                probs = torch.softmax(logits / temperature, dim=-1)
                nxt = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
            seq = torch.cat([seq, nxt[:, None]], dim=1)
            logits = step.next(seq)
        return seq

    def _beam(self, prompt: torch.Tensor, max_new: int, beams: int, use_cache: bool):
        B, P = prompt.shape
        seq = prompt.repeat_interleave(beams, dim=0)  # (B*k, P)
        score = torch.full((B, beams), float("-inf"), device=prompt.device)
        score[:, 0] = 0.0  # the k copies start as one beam
        step = _Stepper(self, use_cache)
        logp = torch.log_softmax(step.first(seq), dim=-1)  # (B*k, V)
        for _ in range(max_new):
            total = score.reshape(B * beams, 1) + logp  # (B*k, V)
            best, idx = total.view(B, beams * VOCAB).topk(beams, dim=-1)  # (B, k)
            parent = idx // VOCAB + torch.arange(B, device=seq.device)[:, None] * beams
            parent = parent.reshape(-1)  # (B*k,) rows of seq to extend
            seq = torch.cat([seq[parent], (idx % VOCAB).reshape(-1, 1)], dim=1)
            step.reorder(parent)
            score = best
            logp = torch.log_softmax(step.next(seq), dim=-1)
        return seq.view(B, beams, -1)[:, 0]  # topk keeps beams sorted: the best is first


class _Stepper:
    """Next-token logits for a growing sequence, cached or not (see ``generate``)."""

    def __init__(self, model: SequenceModel, use_cache: bool) -> None:
        self.model, self.use_cache = model, use_cache
        self.cache = model.new_cache() if use_cache else None

    def first(self, seq: torch.Tensor) -> torch.Tensor:
        return self.model(seq, self.cache)[:, -1]

    def next(self, seq: torch.Tensor) -> torch.Tensor:
        """Logits after ``seq`` (B, T), whose last token is new."""
        T, max_len = seq.shape[1], self.model.max_len
        if self.cache is not None and T <= max_len:
            return self.model(seq[:, -1:], self.cache, start=T - 1)[:, -1]
        self.cache = None  # past the positions: slide the window, no cache from here on
        return self.model(seq[:, -min(T, max_len) :])[:, -1]

    def reorder(self, index: torch.Tensor) -> None:
        if self.cache is not None:
            self.cache.reorder(index)
