"""SigLIP 2 NaFlex: native aspect ratio, variable patch counts (`model_type: siglip2`)."""

from .config import Siglip2Config, Siglip2TextConfig, Siglip2VisionConfig

__all__ = ["Siglip2Config", "Siglip2TextConfig", "Siglip2VisionConfig"]
