"""jimm: Vision Transformers in JAX + Flax NNX with exact Hugging Face parity."""

from .common import sharding
from .common.attention import jax_attention, make_tokamax_attention, tokamax_attention
from .common.sharding import NoSharding, ShardingSpec, ViTSharding
from .models.vit import VisionTransformer, ViTConfig

__all__ = [
    "NoSharding",
    "ShardingSpec",
    "ViTConfig",
    "ViTSharding",
    "VisionTransformer",
    "jax_attention",
    "make_tokamax_attention",
    "sharding",
    "tokamax_attention",
]
__version__ = "0.5.0"
