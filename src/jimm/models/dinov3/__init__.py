"""The DINOv3 ViT family: 2-D RoPE, registers, MLP or gated MLP, optional `[CLS, mean(patches)]` classifier."""

from .config import DINOv3Config
from .model import DINOv3Model
from .sharding import DINOv3Sharding

__all__ = ["DINOv3Config", "DINOv3Model", "DINOv3Sharding"]
