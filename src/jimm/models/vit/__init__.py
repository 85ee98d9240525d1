"""The Vision Transformer family."""

from .config import ViTConfig
from .variants import config_for
from .vit_model import VisionTransformer

__all__ = ["ViTConfig", "VisionTransformer", "config_for"]
