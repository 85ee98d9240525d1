"""The original jimm's module path for the SigLIP classes (`from jimm.models.siglip.siglip_model import SigLIP`)."""

from .model import SigLIP, SigLIPTextModel, SigLIPVisionModel

__all__ = ["SigLIP", "SigLIPTextModel", "SigLIPVisionModel"]
