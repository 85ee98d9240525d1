"""CLIP (Radford et al., 2021, "Learning Transferable Visual Models From Natural Language Supervision"), equal to
transformers' `CLIPModel`, `CLIPVisionModel[WithProjection]`, `CLIPTextModel[WithProjection]` and
`CLIPForImageClassification`. The maths is shared with SigLIP (`jimm.models.image_text.model`); this module holds
the family's rules and the original jimm's constructors.

The positional constructor arguments are the original jimm's; like the original, they imply 64-wide heads and a
4x MLP. `config=` (a `CLIPConfig`) sets every field instead, as `from_pretrained` and `from_config` do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from ...common.sharding import CLIPSharding, ShardingSpec
from ..image_text.model import ImageTextModel, TextModel, VisionModel
from .config import CLIPConfig, CLIPTextConfig, CLIPVisionConfig


class _CLIPFamily:
    SHARDING = CLIPSharding  # the default spec of `from_pretrained`
    CONFIG = CLIPConfig
    HF_PREFIX = "CLIP"
    PROJECTS = True
    LOGIT_BIAS = False
    PROBABILITY = "softmax"


def _vision(image_resolution: int, layers: int, hidden: int, patch: int, projection_dim: int) -> CLIPVisionConfig:
    return CLIPVisionConfig(
        image_size=image_resolution,
        num_hidden_layers=layers,
        hidden_size=hidden,
        num_attention_heads=max(hidden // 64, 1),
        intermediate_size=4 * hidden,
        patch_size=patch,
        projection_dim=projection_dim,
    )


def _text(context_length: int, vocab_size: int, hidden: int, heads: int, layers: int) -> CLIPTextConfig:
    return CLIPTextConfig(
        max_position_embeddings=context_length,
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        projection_dim=hidden,
    )


class CLIP(_CLIPFamily, ImageTextModel):
    """CLIP's two towers: `encode_image`, `encode_text`, `model(images, input_ids)` -> `logits_per_image`,
    `zero_shot(images, labels)` (softmax over the labels)."""

    def __init__(
        self,
        image_resolution: int = 224,
        vision_layers: int = 12,
        vision_hidden_size: int = 768,
        vision_patch_size: int = 32,
        context_length: int = 77,
        vocab_size: int = 49408,
        text_hidden_size: int = 512,
        num_text_heads: int = 8,
        num_text_layers: int = 12,
        use_gradient_checkpointing: bool = False,
        attention_fn: Callable[..., Any] | None = None,
        vision_attention_fn: Callable[..., Any] | None = None,
        text_attention_fn: Callable[..., Any] | None = None,
        rngs: nnx.Rngs | None = None,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        sharding: ShardingSpec | type | None = CLIPSharding,
        *,
        config: CLIPConfig | None = None,
        remat_policy: str | None = None,
        scan_layers: bool = True,
    ):
        """Build a CLIP with random weights, in eval mode (defaults: ViT-B/32, the OpenAI text tower).

        `attention_fn` applies to both towers unless `vision_attention_fn` / `text_attention_fn` override it;
        the projection width is `text_hidden_size` (the original's rule) unless `config` says otherwise.
        """
        if config is None:
            config = CLIPConfig(
                vision_config=_vision(
                    image_resolution, vision_layers, vision_hidden_size, vision_patch_size, text_hidden_size
                ),
                text_config=_text(context_length, vocab_size, text_hidden_size, num_text_heads, num_text_layers),
                projection_dim=text_hidden_size,
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
    def initial_logit_scale_and_bias(cls, config: CLIPConfig) -> tuple[float, float]:
        return config.logit_scale_init_value, 0.0


class CLIPVisionModel(_CLIPFamily, VisionModel):
    """CLIP's vision tower with the feature API, an optional `visual_projection` and an optional classifier."""

    def __init__(
        self,
        image_resolution: int = 224,
        vision_layers: int = 12,
        vision_hidden_size: int = 768,
        vision_patch_size: int = 32,
        projection_dim: int = 512,
        use_gradient_checkpointing: bool = False,
        attention_fn: Callable[..., Any] | None = None,
        rngs: nnx.Rngs | None = None,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        sharding: ShardingSpec | type | None = CLIPSharding,
        *,
        config: CLIPConfig | None = None,
        with_projection: bool = True,
        do_classification: bool = False,
        num_classes: int | None = None,
        id2label: dict[int, str] | None = None,
        remat_policy: str | None = None,
        scan_layers: bool = True,
    ):
        """Build with random weights, in eval mode. `num_classes` / `id2label` set the classifier's classes
        (`do_classification=True` adds it); `with_projection=False` is transformers' plain `CLIPVisionModel`."""
        if config is None:
            vision = _vision(image_resolution, vision_layers, vision_hidden_size, vision_patch_size, projection_dim)
            config = CLIPConfig(vision_config=vision, projection_dim=projection_dim)
        if num_classes is not None or id2label is not None:
            config = config.replace(num_labels=len(id2label) if id2label else num_classes, id2label=id2label)
        super().__init__(
            config=config,
            with_projection=with_projection,
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


class CLIPTextModel(_CLIPFamily, TextModel):
    """CLIP's text tower with an optional `text_projection`."""

    def __init__(
        self,
        context_length: int = 77,
        vocab_size: int = 49408,
        text_hidden_size: int = 512,
        num_text_heads: int = 8,
        num_text_layers: int = 12,
        use_gradient_checkpointing: bool = False,
        attention_fn: Callable[..., Any] | None = None,
        rngs: nnx.Rngs | None = None,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        sharding: ShardingSpec | type | None = CLIPSharding,
        *,
        config: CLIPConfig | None = None,
        with_projection: bool = True,
        remat_policy: str | None = None,
        scan_layers: bool = True,
    ):
        """Build with random weights, in eval mode; `with_projection=False` is transformers' plain `CLIPTextModel`."""
        if config is None:
            text = _text(context_length, vocab_size, text_hidden_size, num_text_heads, num_text_layers)
            config = CLIPConfig(text_config=text, projection_dim=text_hidden_size)
        super().__init__(
            config=config,
            with_projection=with_projection,
            attention_fn=attention_fn,
            use_gradient_checkpointing=use_gradient_checkpointing,
            rngs=rngs,
            dtype=dtype,
            param_dtype=param_dtype,
            sharding=sharding,
            remat_policy=remat_policy,
            scan_layers=scan_layers,
        )


CLIP.vision_class = CLIPVisionModel  # what `jimm train --from` fine-tunes: the vision tower with a new head

__all__ = ["CLIP", "CLIPTextModel", "CLIPVisionModel"]
