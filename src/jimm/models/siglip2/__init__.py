"""SigLIP 2 NaFlex: native aspect ratio, variable patch counts (`model_type: siglip2`), equal to transformers'
`Siglip2Model`."""

from .config import Siglip2Config, Siglip2TextConfig, Siglip2VisionConfig
from .model import SigLIP2, SigLIP2TextModel, SigLIP2VisionModel

__all__ = [
    "SigLIP2",
    "SigLIP2TextModel",
    "SigLIP2VisionModel",
    "Siglip2Config",
    "Siglip2TextConfig",
    "Siglip2VisionConfig",
]
