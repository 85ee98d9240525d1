"""The original jimm's module path for the DINOv2 class (`from jimm.models.dinov2.dinov2_model import DINOv2Model`)."""

from .model import DINOv2Model

__all__ = ["DINOv2Model"]
