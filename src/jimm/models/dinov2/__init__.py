"""The DINOv2 family: plain, with registers, giant's SwiGLU, and the `[CLS, mean(patches)]` classifier."""

from .config import DINOv2Config
from .model import DINOv2Model
from .sharding import DINOv2Sharding

__all__ = ["DINOv2Config", "DINOv2Model", "DINOv2Sharding"]
