"""CLIP: image and text towers, zero-shot classification and embeddings, equal to transformers' CLIP classes."""

from .config import CLIPConfig, CLIPTextConfig, CLIPVisionConfig
from .model import CLIP, CLIPTextModel, CLIPVisionModel

__all__ = ["CLIP", "CLIPConfig", "CLIPTextConfig", "CLIPTextModel", "CLIPVisionConfig", "CLIPVisionModel"]
