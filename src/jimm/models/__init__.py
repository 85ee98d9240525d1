"""Model families, one sub-package each. The model classes are re-exported here, as in the original jimm
(`from jimm.models import CLIP`); they are imported on first use so `import jimm.models.<family>` stays cheap."""

from __future__ import annotations

import importlib
from typing import Any

_CLASSES = {
    "VisionTransformer": "vit",
    "DINOv2Model": "dinov2",
    "DINOv2Sharding": "dinov2",
    "DINOv3Model": "dinov3",
    "DINOv3Sharding": "dinov3",
    "AIMv2": "aimv2",
    "AIMv2Model": "aimv2",
    "AIMv2Sharding": "aimv2",
    "CLIP": "clip",
    "CLIPTextModel": "clip",
    "CLIPVisionModel": "clip",
    "SigLIP": "siglip",
    "SigLIPTextModel": "siglip",
    "SigLIPVisionModel": "siglip",
}

__all__ = list(_CLASSES)


def __getattr__(name: str) -> Any:
    if name in _CLASSES:
        value = getattr(importlib.import_module(f".{_CLASSES[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_CLASSES])
