"""SigLIP (Zhai et al., 2023, "Sigmoid Loss for Language Image Pre-Training") and SigLIP 2's fixed-resolution
checkpoints (`model_type: siglip`, Gemma tokenizer), equal to transformers' `SiglipModel`, `SiglipVisionModel`,
`SiglipTextModel` and `SiglipForImageClassification`. The maths is shared with CLIP
(`jimm.models.image_text.model`); this module holds the family's rules and the original jimm's constructors.

The positional constructor arguments are the original jimm's; like the original, they imply 64-wide heads and a
4x MLP. `config=` (a `SiglipConfig`) sets every field instead (so400m: width 1152, 16 heads of 72, MLP 4304).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from ...common.sharding import ShardingSpec, SigLIPSharding
from ..image_text.model import ImageTextModel, TextModel, VisionModel
from .config import SiglipConfig, SiglipTextConfig, SiglipVisionConfig


class _SiglipFamily:
    SHARDING = SigLIPSharding  # the default spec of `from_pretrained`
    CONFIG = SiglipConfig
    HF_PREFIX = "Siglip"
    PROJECTS = False
    LOGIT_BIAS = True
    PROBABILITY = "sigmoid"


def _vision(image_resolution: int, layers: int, hidden: int, patch: int) -> SiglipVisionConfig:
    return SiglipVisionConfig(
        image_size=image_resolution,
        num_hidden_layers=layers,
        hidden_size=hidden,
        num_attention_heads=max(hidden // 64, 1),
        intermediate_size=4 * hidden,
        patch_size=patch,
    )


def _text(context_length: int, vocab_size: int, hidden: int, heads: int, layers: int, out: int) -> SiglipTextConfig:
    return SiglipTextConfig(
        max_position_embeddings=context_length,
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        projection_size=out,
    )


class SigLIP(_SiglipFamily, ImageTextModel):
    """SigLIP's two towers: `encode_image`, `encode_text`, `model(images, input_ids)` -> `logits_per_image`,
    `zero_shot(images, labels)` (a sigmoid per image-label pair)."""

    def __init__(
        self,
        image_resolution: int = 224,
        vision_layers: int = 12,
        vision_hidden_size: int = 768,
        vision_patch_size: int = 16,
        context_length: int = 64,
        vocab_size: int = 32000,
        text_hidden_size: int = 768,
        num_text_heads: int = 12,
        num_text_layers: int = 12,
        use_gradient_checkpointing: bool = False,
        attention_fn: Callable[..., Any] | None = None,
        vision_attention_fn: Callable[..., Any] | None = None,
        text_attention_fn: Callable[..., Any] | None = None,
        rngs: nnx.Rngs | None = None,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        sharding: ShardingSpec | type | None = SigLIPSharding,
        *,
        config: SiglipConfig | None = None,
        remat_policy: str | None = None,
        scan_layers: bool = True,
    ):
        """Build a SigLIP with random weights, in eval mode (defaults: B/16 at 224 px, 64 text tokens).

        The text head maps to the image width; `attention_fn` applies to both towers unless
        `vision_attention_fn` / `text_attention_fn` override it.
        """
        if config is None:
            config = SiglipConfig(
                vision_config=_vision(image_resolution, vision_layers, vision_hidden_size, vision_patch_size),
                text_config=_text(
                    context_length, vocab_size, text_hidden_size, num_text_heads, num_text_layers, vision_hidden_size
                ),
            )
        super().__init__(
            config=config,
            attention_fn=attention_fn,
            vision_attention_fn=vision_attention_fn,
            text_attention_fn=text_attention_fn,
            use_gradient_checkpointing=use_gradient_checkpointing,
            rngs=rngs,
            dtype=dtype,
            param_dtype=param_dtype,
            sharding=sharding,
            remat_policy=remat_policy,
            scan_layers=scan_layers,
        )

    @classmethod
    def initial_logit_scale_and_bias(cls, config: SiglipConfig) -> tuple[float, float]:
        return math.log(10.0), -10.0  # the paper's t' = log 10, b = -10 (transformers zeroes both)


class SigLIPVisionModel(_SiglipFamily, VisionModel):
    """SigLIP's vision tower with the feature API, the MAP head and an optional classifier."""

    def __init__(
        self,
        image_resolution: int = 224,
        vision_layers: int = 12,
        vision_hidden_size: int = 768,
        vision_patch_size: int = 16,
        use_gradient_checkpointing: bool = False,
        attention_fn: Callable[..., Any] | None = None,
        rngs: nnx.Rngs | None = None,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        sharding: ShardingSpec | type | None = SigLIPSharding,
        *,
        config: SiglipConfig | None = None,
        do_classification: bool = False,
        num_classes: int | None = None,
        id2label: dict[int, str] | None = None,
        remat_policy: str | None = None,
        scan_layers: bool = True,
    ):
        """Build with random weights, in eval mode. `num_classes` / `id2label` set the classifier's classes
        (`do_classification=True` adds it)."""
        if config is None:
            vision = _vision(image_resolution, vision_layers, vision_hidden_size, vision_patch_size)
            config = SiglipConfig(vision_config=vision)
        if num_classes is not None or id2label is not None:
            config = config.replace(num_labels=len(id2label) if id2label else num_classes, id2label=id2label)
        super().__init__(
            config=config,
            do_classification=do_classification,
            attention_fn=attention_fn,
            use_gradient_checkpointing=use_gradient_checkpointing,
            rngs=rngs,
            dtype=dtype,
            param_dtype=param_dtype,
            sharding=sharding,
            remat_policy=remat_policy,
            scan_layers=scan_layers,
        )


class SigLIPTextModel(_SiglipFamily, TextModel):
    """SigLIP's text tower, its `head` included."""

    def __init__(
        self,
        context_length: int = 64,
        vocab_size: int = 32000,
        text_hidden_size: int = 768,
        num_text_heads: int = 12,
        num_text_layers: int = 12,
        use_gradient_checkpointing: bool = False,
        attention_fn: Callable[..., Any] | None = None,
        rngs: nnx.Rngs | None = None,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        sharding: ShardingSpec | type | None = SigLIPSharding,
        *,
        config: SiglipConfig | None = None,
        remat_policy: str | None = None,
        scan_layers: bool = True,
    ):
        """Build with random weights, in eval mode."""
        if config is None:
            text = _text(
                context_length, vocab_size, text_hidden_size, num_text_heads, num_text_layers, text_hidden_size
            )
            config = SiglipConfig(text_config=text)
        super().__init__(
            config=config,
            attention_fn=attention_fn,
            use_gradient_checkpointing=use_gradient_checkpointing,
            rngs=rngs,
            dtype=dtype,
            param_dtype=param_dtype,
            sharding=sharding,
            remat_policy=remat_policy,
            scan_layers=scan_layers,
        )


SigLIP.vision_class = SigLIPVisionModel  # what `jimm train --from` fine-tunes: the vision tower with a new head

__all__ = ["SigLIP", "SigLIPTextModel", "SigLIPVisionModel"]
