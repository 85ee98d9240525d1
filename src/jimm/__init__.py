"""jimm: Vision Transformers in JAX + Flax NNX with exact Hugging Face parity."""

from .common import sharding
from .common.attention import jax_attention, make_tokamax_attention, tokamax_attention
from .common.sharding import NoSharding, ShardingSpec, ViTSharding
from .models.catalog import create_model, list_models
from .models.clip import CLIP, CLIPTextModel, CLIPVisionModel
from .models.dinov2 import DINOv2Config, DINOv2Model
from .models.dinov3 import DINOv3Config, DINOv3Model
from .models.registry import from_pretrained
from .models.siglip import SigLIP, SigLIPTextModel, SigLIPVisionModel
from .models.vit import VisionTransformer, ViTConfig
from .text import Tokenizer

__all__ = [
    "CLIP",
    "CLIPTextModel",
    "CLIPVisionModel",
    "DINOv2Config",
    "DINOv2Model",
    "DINOv3Config",
    "DINOv3Model",
    "NoSharding",
    "ShardingSpec",
    "SigLIP",
    "SigLIPTextModel",
    "SigLIPVisionModel",
    "Tokenizer",
    "ViTConfig",
    "ViTSharding",
    "VisionTransformer",
    "create_model",
    "from_pretrained",
    "jax_attention",
    "list_models",
    "make_tokamax_attention",
    "sharding",
    "tokamax_attention",
]
__version__ = "0.5.0"
