"""Plain torch building blocks; nothing here knows about Lightning."""

from lit_loops.nn.attention import SelfAttention
from lit_loops.nn.looped import LoopedTransformer
from lit_loops.nn.transformer import Block, Transformer, TransformerConfig

__all__ = ["Block", "LoopedTransformer", "SelfAttention", "Transformer", "TransformerConfig"]
