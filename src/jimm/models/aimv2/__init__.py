"""The AIMv2 vision family: RMSNorm, patch-token norm, SwiGLU, learned or 2-D sin-cos positions, probe head."""

from .config import AIMv2Config
from .model import AIMv2Model
from .sharding import AIMv2Sharding

__all__ = ["AIMv2Config", "AIMv2Model", "AIMv2Sharding"]
