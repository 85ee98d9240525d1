"""The original jimm's module path for the CLIP classes (`from jimm.models.clip.clip_model import CLIP`)."""

from .model import CLIP, CLIPTextModel, CLIPVisionModel

__all__ = ["CLIP", "CLIPTextModel", "CLIPVisionModel"]
