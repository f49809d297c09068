"""Plain torch building blocks; nothing here knows about Lightning.

``transformer``: the layer stack (``TransformerConfig``, ``Block``, ``LayerStack``: plain or
looped, causal or not); ``model``: read-ins, and ``TransformerWrapper`` joining a read-in,
the stack and a head; ``attention``: SDPA self-attention with a KV cache; ``sampling``:
greedy / sampled / beam decoding for every generator.
"""

from lit_loops.nn.attention import KVCache, SelfAttention
from lit_loops.nn.model import (
    LowRankEmbedding,
    LowRankHead,
    TokenReadIn,
    TransformerWrapper,
    VectorReadIn,
)
from lit_loops.nn.sampling import CachedDecoder, generate, sample_next
from lit_loops.nn.transformer import (
    Block,
    LayerStack,
    TransformerConfig,
    init_weights,
    num_parameters,
)

__all__ = [
    "Block",
    "CachedDecoder",
    "KVCache",
    "LayerStack",
    "LowRankEmbedding",
    "LowRankHead",
    "SelfAttention",
    "TokenReadIn",
    "TransformerConfig",
    "TransformerWrapper",
    "VectorReadIn",
    "generate",
    "init_weights",
    "num_parameters",
    "sample_next",
]
