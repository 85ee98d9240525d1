"""The original jimm's module path for the DINOv3 class (`from jimm.models.dinov3.dinov3_model import DINOv3Model`)."""

from .model import DINOv3Model

__all__ = ["DINOv3Model"]
