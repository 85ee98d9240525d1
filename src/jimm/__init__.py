"""jimm: Vision Transformers in JAX + Flax NNX with exact Hugging Face parity."""

import importlib.util as _importlib_util
from typing import Any as _Any

from .common import sharding
from .common.attention import jax_attention
from .common.autotuning import autotune, autotuned_fn, cached_autotune, load_autotune_result
from .common.sharding import (
    AIMv2Sharding,
    CLIPSharding,
    DINOv2Sharding,
    DINOv3Sharding,
    NoSharding,
    ShardingSpec,
    SigLIPSharding,
    ViTSharding,
)
from .common.tokamax_attention import make_tokamax_attention, tokamax_attention
from .models.aimv2 import AIMv2, AIMv2Config, AIMv2Model
from .models.catalog import list_models
from .models.clip import CLIP, CLIPTextModel, CLIPVisionModel
from .models.dinov2 import DINOv2Config, DINOv2Model
from .models.dinov3 import DINOv3Config, DINOv3Model
from .models.factory import create_model
from .models.registry import from_pretrained
from .models.siglip import SigLIP, SigLIPTextModel, SigLIPVisionModel
from .models.siglip2 import SigLIP2, SigLIP2TextModel, SigLIP2VisionModel
from .models.vit import VisionTransformer, ViTConfig
from .text import Tokenizer

__all__ = [
    "CLIP",
    "AIMv2",
    "AIMv2Config",
    "AIMv2Model",
    "AIMv2Sharding",
    "CLIPSharding",
    "CLIPTextModel",
    "CLIPVisionModel",
    "DINOv2Config",
    "DINOv2Model",
    "DINOv2Sharding",
    "DINOv3Config",
    "DINOv3Model",
    "DINOv3Sharding",
    "NoSharding",
    "ShardingSpec",
    "SigLIP",
    "SigLIP2",
    "SigLIP2TextModel",
    "SigLIP2VisionModel",
    "SigLIPSharding",
    "SigLIPTextModel",
    "SigLIPVisionModel",
    "Tokenizer",
    "ViTConfig",
    "ViTSharding",
    "VisionTransformer",
    "autotune",
    "autotuned_fn",
    "cached_autotune",
    "create_model",
    "from_pretrained",
    "jax_attention",
    "list_models",
    "load_autotune_result",
    "make_tokamax_attention",
    "sharding",
    "tokamax_attention",
]


def _has_tokamax() -> bool:
    try:
        return _importlib_util.find_spec("tokamax") is not None
    except (ImportError, ValueError):  # a blocked or broken installation
        return False


if _has_tokamax():  # `from jimm import *` must work without the tokamax extra
    __all__.append("AutotuningResult")
__version__ = "0.5.0"


def __getattr__(name: str) -> _Any:
    if name == "AutotuningResult":  # tokamax's class; importing it imports tokamax, so only on first use
        from .common.autotuning import AutotuningResult

        return AutotuningResult
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
