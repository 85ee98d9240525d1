"""SigLIP's configs (v1 and SigLIP 2 fixed-resolution, both `model_type: siglip`) with transformers' field names
and class defaults (google/siglip-base-patch16-224), and the towers they describe. Parsing and writing are
shared with CLIP (`jimm.models.image_text.config`).
"""

from __future__ import annotations

import dataclasses

from ...common.text import TextTowerConfig
from ...common.vision import VisionTowerConfig
from ..image_text.config import PairConfig, SubConfig


@dataclasses.dataclass(frozen=True, kw_only=True)
class SiglipVisionConfig(SubConfig):
    """transformers' `SiglipVisionConfig`."""

    MODEL_TYPE = "siglip_vision_model"
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    num_channels: int = 3
    image_size: int | tuple[int, int] = 224
    patch_size: int | tuple[int, int] = 16
    hidden_act: str = "gelu_pytorch_tanh"  # big_vision's flax `nn.gelu` is the tanh approximation
    layer_norm_eps: float = 1e-6
    attention_dropout: float = 0.0
    vision_use_head: bool = True

    def tower(self) -> VisionTowerConfig:
        """No class token, positions for the patches only, `post_layernorm` on every token, then the MAP head
        (without the head, the tower's own pooling is the patch mean)."""
        return VisionTowerConfig(
            **self._shared_tower_fields(),
            image_size=self.image_size,
            patch_size=self.patch_size,
            num_channels=self.num_channels,
            class_token=False,
            pos_embed_prefix="none",
            global_pool="map" if self.vision_use_head else "avg",
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class SiglipTextConfig(SubConfig):
    """transformers' `SiglipTextConfig` (SigLIP 2: vocab 256000 and a Gemma tokenizer, same architecture)."""

    MODEL_TYPE = "siglip_text_model"
    vocab_size: int = 32000
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    max_position_embeddings: int = 64  # 16 for so400m-224: pad to this, not to the tokenizer's 64
    hidden_act: str = "gelu_pytorch_tanh"
    layer_norm_eps: float = 1e-6
    attention_dropout: float = 0.0
    pad_token_id: int | None = 1
    bos_token_id: int | None = 49406
    eos_token_id: int | None = 49407
    projection_size: int | None = None  # the `head`'s output width; None means hidden_size

    def tower(self) -> TextTowerConfig:
        """Bidirectional attention (a mask only when one is passed), pooling at the last position, then `head`."""
        return TextTowerConfig(
            **self._shared_tower_fields(),
            vocab_size=self.vocab_size,
            max_positions=self.max_position_embeddings,
            causal=False,
            pooling="last",
            head_size=self.projection_size or self.hidden_size,
        )

    def to_hf_dict(self):
        return {**super().to_hf_dict(), "projection_size": self.projection_size or self.hidden_size}


@dataclasses.dataclass(frozen=True, kw_only=True)
class SiglipConfig(PairConfig):
    """transformers' `SiglipConfig`: both towers (no projection: the text head maps to the image width).

    Also the config of jimm's standalone towers (the other tower at its defaults, unused) and of
    `SiglipForImageClassification` (labels).
    """

    MODEL_TYPE = "siglip"
    ARCHITECTURE = "SiglipModel"
    FAMILY = "jimm.SigLIP"
    VISION = SiglipVisionConfig
    TEXT = SiglipTextConfig
    vision_config: SiglipVisionConfig = dataclasses.field(default_factory=SiglipVisionConfig)
    text_config: SiglipTextConfig = dataclasses.field(default_factory=SiglipTextConfig)
    num_labels: int = 2
    id2label: dict[int, str] | None = None

    __hash__ = PairConfig.__hash__  # a dataclass would generate one that fails on the id2label dict

    def __post_init__(self) -> None:
        self._check_labels()


__all__ = ["SiglipConfig", "SiglipTextConfig", "SiglipVisionConfig"]
