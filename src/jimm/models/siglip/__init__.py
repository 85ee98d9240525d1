"""SigLIP and SigLIP 2 (fixed resolution): image and text towers, equal to transformers' Siglip classes."""

from .config import SiglipConfig, SiglipTextConfig, SiglipVisionConfig
from .model import SigLIP, SigLIPTextModel, SigLIPVisionModel

__all__ = ["SigLIP", "SigLIPTextModel", "SigLIPVisionModel", "SiglipConfig", "SiglipTextConfig", "SiglipVisionConfig"]
