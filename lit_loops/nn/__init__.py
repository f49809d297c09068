"""Plain torch building blocks; nothing here knows about Lightning."""

from lit_loops.nn.attention import KVCache, SelfAttention
from lit_loops.nn.looped import LoopedTransformer
from lit_loops.nn.transformer import Block, Transformer, TransformerConfig

__all__ = [
    "Block",
    "KVCache",
    "LoopedTransformer",
    "SelfAttention",
    "Transformer",
    "TransformerConfig",
]
