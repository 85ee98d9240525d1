"""The Vision Transformer family."""

from .backbone import VisionTransformerBase
from .config import ViTConfig
from .variants import config_for
from .vit_model import VisionTransformer

__all__ = ["ViTConfig", "VisionTransformer", "VisionTransformerBase", "config_for"]
