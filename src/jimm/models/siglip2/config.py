"""SigLIP 2 NaFlex configs (`model_type: siglip2`) with transformers' field names and class defaults
(google/siglip2-base-patch16-naflex). Parsing and writing are shared with CLIP and SigLIP
(`jimm.models.image_text.config`); the text tower is SigLIP's, under SigLIP 2's model type.

SigLIP 2's fixed-resolution checkpoints are `model_type: siglip` and load as `jimm.SigLIP`; only the NaFlex ones
(variable aspect ratio, `num_patches` positions) are `siglip2`.
"""

from __future__ import annotations

import dataclasses
import math

from ...common.vision import VisionTowerConfig
from ..image_text.config import PairConfig, SubConfig
from ..siglip.config import SiglipTextConfig


@dataclasses.dataclass(frozen=True, kw_only=True)
class Siglip2VisionConfig(SubConfig):
    """transformers' `Siglip2VisionConfig`: no image size; `num_patches` position rows, a square grid that is
    resized to each image's patch grid."""

    MODEL_TYPE = "siglip2_vision_model"
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    num_channels: int = 3
    patch_size: int = 16
    hidden_act: str = "gelu_pytorch_tanh"
    layer_norm_eps: float = 1e-6
    attention_dropout: float = 0.0
    vision_use_head: bool = True
    num_patches: int = 256

    @property
    def position_grid(self) -> int:
        """The side of the square position table (16 for 256 rows)."""
        return math.isqrt(self.num_patches)

    def tower(self) -> VisionTowerConfig:
        """SigLIP's tower (no class token, positions for the patches only, `post_layernorm` on every token, the MAP
        head) whose position table is a `position_grid`-square grid, resized per image by the NaFlex tower."""
        p, side = self.patch_size, self.position_grid
        if not isinstance(p, int) or isinstance(p, bool) or p < 1:
            raise ValueError(f"patch_size must be one positive int (the patches are p x p), got {p!r}")
        if self.num_patches < 1 or side * side != self.num_patches:
            raise ValueError(f"num_patches={self.num_patches} is not a square number of position rows (e.g. 256)")
        return VisionTowerConfig(
            **self._shared_tower_fields(),
            image_size=side * p,
            patch_size=p,
            num_channels=self.num_channels,
            class_token=False,
            pos_embed_prefix="none",
            pos_resample="bilinear_antialias",
            global_pool="map" if self.vision_use_head else "avg",
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class Siglip2TextConfig(SiglipTextConfig):
    """transformers' `Siglip2TextConfig`: SigLIP's text tower and fields (the hub's use a Gemma tokenizer)."""

    MODEL_TYPE = "siglip2_text_model"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Siglip2Config(PairConfig):
    """transformers' `Siglip2Config`: both towers (no projection: the text head maps to the image width)."""

    MODEL_TYPE = "siglip2"
    ARCHITECTURE = "Siglip2Model"
    FAMILY = "jimm.SigLIP2"
    VISION = Siglip2VisionConfig
    TEXT = Siglip2TextConfig
    vision_config: Siglip2VisionConfig = dataclasses.field(default_factory=Siglip2VisionConfig)
    text_config: Siglip2TextConfig = dataclasses.field(default_factory=Siglip2TextConfig)
    num_labels: int = 2
    id2label: dict[int, str] | None = None

    __hash__ = PairConfig.__hash__  # a dataclass would generate one that fails on the id2label dict

    def __post_init__(self) -> None:
        self._check_labels()

    @property
    def image_hw(self) -> tuple[int, int]:
        raise ValueError(
            "SigLIP 2 NaFlex has no fixed image size: each image keeps its aspect ratio within max_num_patches "
            "(jimm.data.naflex)"
        )


__all__ = ["Siglip2Config", "Siglip2TextConfig", "Siglip2VisionConfig"]
