"""The Vision Transformer family."""

from .config import ViTConfig
from .vit_model import VisionTransformer, VisionTransformerBase

__all__ = ["ViTConfig", "VisionTransformer", "VisionTransformerBase"]
