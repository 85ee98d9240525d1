"""The original jimm's module path for the AIMv2 class (`from jimm.models.aimv2.aimv2_model import AIMv2Model`)."""

from .model import AIMv2Model

__all__ = ["AIMv2Model"]
