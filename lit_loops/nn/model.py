"""One way to assemble a network (after x-transformers' ``TransformerWrapper``): a read-in,
the layer stack, a final norm and a head.

    net = TransformerWrapper(TokenReadIn(vocab, d, max_len), LayerStack(cfg), nn.Linear(d, vocab))

A read-in is any module with ``forward(x, start=0) -> (B, T, D)`` and ``max_len`` (the
positions it has): ``TokenReadIn`` (token ids), ``VectorReadIn`` (a vector per position),
or an experiment's own (the sequence model's value features). A head is any module on
``(..., D)``, usually an ``nn.Linear``.
"""

from __future__ import annotations

import torch
from torch import nn

from lit_loops.checks import check, check_positive_int
from lit_loops.nn.attention import KVCache
from lit_loops.nn.sampling import CachedDecoder, generate
from lit_loops.nn.transformer import LayerStack, init_weights, make_norm, num_parameters


def check_positions(start: int, length: int, max_len: int) -> None:
    check(
        start + length <= max_len,
        "sequence length",
        start + length,
        f"must not exceed the model's positions (max_len={max_len})",
    )


class PositionalReadIn(nn.Module):
    """What each position holds, mapped to ``d_model`` (``content``), plus a learned
    embedding of the position (``pos_emb``, ``max_len`` rows): ``(B, T, ...) -> (B, T, D)``.
    Subclasses make their content module first, then the positions (GPT-2's order)."""

    max_len: int
    pos_emb: nn.Embedding

    def content(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        T = x.shape[1]
        check_positions(start, T, self.max_len)
        return self.content(x) + self.pos_emb(torch.arange(start, start + T, device=x.device))


class LowRankEmbedding(nn.Module):
    """A factorised embedding ``E = table @ proj`` of rank ``rank``: every token owns
    ``rank`` numbers (``table``, ``(V, rank)``), mapped to ``d_model`` by one shared linear
    map (``proj``). ``weight`` is the ``(V, D)`` product, as an ``nn.Embedding``'s is.

    ``forward(tokens: (B, T)) -> (B, T, D)``.
    """

    def __init__(self, vocab_size: int, rank: int, d_model: int) -> None:
        super().__init__()
        check_positive_int("rank", rank)
        self.table = nn.Embedding(vocab_size, rank)
        self.proj = nn.Linear(rank, d_model, bias=False)

    @property
    def weight(self) -> torch.Tensor:
        return self.proj(self.table.weight)  # (V, D)

    def gpt2_init(self) -> None:
        # the product's entries at GPT-2's scale (std 0.02), the table's at it too
        nn.init.normal_(self.table.weight, std=0.02)
        nn.init.normal_(self.proj.weight, std=self.proj.in_features**-0.5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.proj(self.table(tokens))


class LowRankHead(nn.Module):
    """A factorised unembedding ``W = table @ proj`` of rank ``rank``: ``(..., D)`` ->
    ``(..., V)`` logits through ``proj`` (``D -> rank``, shared) and ``table`` (``rank ->
    V``, a row per token). ``weight`` is the ``(V, D)`` product, as an ``nn.Linear``'s is.
    """

    def __init__(self, d_model: int, rank: int, vocab_size: int) -> None:
        super().__init__()
        check_positive_int("rank", rank)
        self.proj = nn.Linear(d_model, rank, bias=False)
        self.table = nn.Linear(rank, vocab_size, bias=False)

    @property
    def weight(self) -> torch.Tensor:
        return self.table.weight @ self.proj.weight  # (V, D)

    def gpt2_init(self) -> None:
        nn.init.normal_(self.table.weight, std=0.02)
        nn.init.normal_(self.proj.weight, std=self.proj.out_features**-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table(self.proj(x))


class TokenReadIn(PositionalReadIn):
    """Token ids ``(B, T)`` -> token + learned position embeddings ``(B, T, D)``.
    ``rank``: a factorised token embedding (``LowRankEmbedding``) instead of a full one."""

    def __init__(
        self, vocab_size: int, d_model: int, max_len: int, rank: int | None = None
    ) -> None:
        super().__init__()
        check_positive_int("vocab_size", vocab_size)
        check_positive_int("max_len", max_len)
        self.tok_emb = (
            nn.Embedding(vocab_size, d_model)
            if rank is None
            else LowRankEmbedding(vocab_size, rank, d_model)
        )
        self.max_len, self.pos_emb = max_len, nn.Embedding(max_len, d_model)

    def content(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.tok_emb(tokens)


class VectorReadIn(PositionalReadIn):
    """Vectors ``(B, T, d_in)`` -> a linear map + learned position embeddings ``(B, T, D)``."""

    def __init__(self, d_in: int, d_model: int, max_len: int) -> None:
        super().__init__()
        check_positive_int("d_in", d_in)
        check_positive_int("max_len", max_len)
        self.proj = nn.Linear(d_in, d_model)
        self.max_len, self.pos_emb = max_len, nn.Embedding(max_len, d_model)

    def content(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class TransformerWrapper(nn.Module):
    """``read_in -> dropout -> stack -> final norm -> head``, initialised as GPT-2.

    ``forward(x, loops=None, cache=None, start=0, last_only=False) -> (B, T, d_out)``
    (``(B, 1, d_out)`` with ``last_only``); ``start`` is the absolute position of
    ``x[:, 0]`` (non-zero when decoding with a cache). ``passes`` gives the head's output
    after each loop of a looped stack. ``generate`` decodes token models (``nn.sampling``).

    Args:
        read_in, stack, head: the parts (see the module docs).
        final_norm: a norm of the stack's kind before the head (a looped stack with
            ``norm_each_loop`` ends on its own norm and needs none).
        tie_embeddings: the head's weight is the read-in's token embedding (GPT-2).
    """

    def __init__(
        self,
        read_in: nn.Module,
        stack: LayerStack,
        head: nn.Module,
        final_norm: bool = True,
        tie_embeddings: bool = False,
    ) -> None:
        super().__init__()
        d = stack.cfg.d_model
        self.read_in, self.stack, self.head = read_in, stack, head
        self.drop = nn.Dropout(stack.cfg.dropout)
        self.norm_final = make_norm(stack.cfg.norm, d) if final_norm else nn.Identity()
        self.apply(init_weights)
        if tie_embeddings:
            check(
                isinstance(read_in, TokenReadIn)
                and isinstance(read_in.tok_emb, nn.Embedding)
                and isinstance(head, nn.Linear),
                "tie_embeddings",
                True,
                "needs a TokenReadIn with a full embedding and a linear head",
            )
            self.head.weight = self.read_in.tok_emb.weight

    @property
    def max_len(self) -> int:
        return self.read_in.max_len

    def num_parameters(self) -> int:
        return num_parameters(self)

    def new_cache(self) -> KVCache:
        return self.stack.new_cache()

    def forward(
        self,
        x: torch.Tensor,
        loops: int | None = None,
        cache: KVCache | None = None,
        start: int = 0,
        last_only: bool = False,
    ) -> torch.Tensor:
        e = self.drop(self.read_in(x, start))  # (B, T, D)
        return self.head(self.norm_final(self.stack(e, loops, cache, last_only)))

    def passes(
        self, x: torch.Tensor, loops: int | None = None, window: int | None = None
    ) -> list[torch.Tensor]:
        """The head's output after each of the last ``window`` loops: see
        ``LayerStack.passes``; a list of ``(B, T, d_out)``."""
        e = self.drop(self.read_in(x))
        return [self.head(self.norm_final(z)) for z in self.stack.passes(e, loops, window)]

    @torch.no_grad()
    def generate(
        self, prompt: torch.Tensor, max_new_tokens: int, use_cache: bool = True, **sampling
    ) -> torch.Tensor:
        """``(B, P)`` token prompt -> ``(B, P + max_new_tokens)``; ``sampling``: the
        strategy and its settings (``nn.sampling.generate``). Past ``max_len`` positions
        the window slides (see ``CachedDecoder``)."""
        was_training = self.training
        self.eval()
        try:
            return generate(CachedDecoder(self, use_cache), prompt, max_new_tokens, **sampling)
        finally:
            self.train(was_training)
