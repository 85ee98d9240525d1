"""CLIP's configs with transformers' field names and class defaults (openai/clip-vit-base-patch32), and the
towers they describe. Parsing and writing are shared with SigLIP (`jimm.models.image_text.config`).
"""

from __future__ import annotations

import dataclasses

from ...common.text import TextTowerConfig
from ...common.vision import VisionTowerConfig
from ..image_text.config import PairConfig, SubConfig


@dataclasses.dataclass(frozen=True, kw_only=True)
class CLIPVisionConfig(SubConfig):
    """transformers' `CLIPVisionConfig`."""

    MODEL_TYPE = "clip_vision_model"
    hidden_size: int = 768
    intermediate_size: int = 3072
    projection_dim: int = 512  # the width of `CLIPVisionModelWithProjection`'s projection
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    num_channels: int = 3
    image_size: int | tuple[int, int] = 224
    patch_size: int | tuple[int, int] = 32
    hidden_act: str = "quick_gelu"  # OpenAI's; LAION / OpenCLIP conversions say "gelu"
    layer_norm_eps: float = 1e-5
    attention_dropout: float = 0.0

    def tower(self) -> VisionTowerConfig:
        """A class embedding with a position row, no patch bias, `pre_layrnorm`, and `post_layernorm` on the pooled
        class token only (HF's `last_hidden_state` is not normed)."""
        return VisionTowerConfig(
            **self._shared_tower_fields(),
            image_size=self.image_size,
            patch_size=self.patch_size,
            num_channels=self.num_channels,
            patch_bias=False,
            pre_norm=True,
            fc_norm=True,
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class CLIPTextConfig(SubConfig):
    """transformers' `CLIPTextConfig`."""

    MODEL_TYPE = "clip_text_model"
    vocab_size: int = 49408
    hidden_size: int = 512
    intermediate_size: int = 2048
    projection_dim: int = 512  # the width of `CLIPTextModelWithProjection`'s projection
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    attention_dropout: float = 0.0
    pad_token_id: int | None = 1
    bos_token_id: int | None = 49406
    eos_token_id: int | None = 49407

    def tower(self) -> TextTowerConfig:
        """Causal attention; pooling at argmax(ids) for the legacy `eos_token_id == 2` (OpenAI hub configs), else
        at the first `eos_token_id` (transformers#24773)."""
        return TextTowerConfig(
            **self._shared_tower_fields(),
            vocab_size=self.vocab_size,
            max_positions=self.max_position_embeddings,
            causal=True,
            pooling="argmax" if self.eos_token_id == 2 else "eos",
            eos_token_id=self.eos_token_id,
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class CLIPConfig(PairConfig):
    """transformers' `CLIPConfig`: both towers, the projection width and the logit scale's initial value.

    Also the config of jimm's standalone towers (the other tower at its defaults, unused) and of
    `CLIPForImageClassification` (labels).
    """

    MODEL_TYPE = "clip"
    ARCHITECTURE = "CLIPModel"
    FAMILY = "jimm.CLIP"
    VISION = CLIPVisionConfig
    TEXT = CLIPTextConfig
    LEGACY_SUB_DICTS = True
    vision_config: CLIPVisionConfig = dataclasses.field(default_factory=CLIPVisionConfig)
    text_config: CLIPTextConfig = dataclasses.field(default_factory=CLIPTextConfig)
    projection_dim: int = 512
    logit_scale_init_value: float = 2.6592  # ln(1 / 0.07)
    num_labels: int = 2
    id2label: dict[int, str] | None = None

    __hash__ = PairConfig.__hash__  # a dataclass would generate one that fails on the id2label dict

    def __post_init__(self) -> None:
        self._check_labels()


__all__ = ["CLIPConfig", "CLIPTextConfig", "CLIPVisionConfig"]
