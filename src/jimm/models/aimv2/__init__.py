"""The AIMv2 family: the vision tower (`AIMv2Model`: RMSNorm, patch-token norm, SwiGLU, learned or 2-D sin-cos
positions, probe head) and the LiT image-text pair (`AIMv2`)."""

from .config import AIMv2Config, AIMv2LiTConfig, AIMv2TextConfig
from .lit import AIMv2
from .model import AIMv2Model
from .sharding import AIMv2Sharding

__all__ = ["AIMv2", "AIMv2Config", "AIMv2LiTConfig", "AIMv2Model", "AIMv2Sharding", "AIMv2TextConfig"]
