"""AIMv2's LiT pair (`apple/aimv2-large-patch14-224-lit`), equal to transformers' `Aimv2Model`. Maths only.

A plug-in of the image-text family (`jimm.models.image_text`): the AIMv2 vision tower with its attention-pooling
head and the causal AIMv2 text tower (RMSNorm, SwiGLU, pooled at the first `eos_token_id`), each projected without
bias, CLIP's softmax over the labels. What it changes: the name table (AIMv2's tower names, `hf_name_table`) and
the logit scale, clamped to `[0, ln max_logit_scale]` before `exp` (`log_logit_scale`).

transformers builds the text tower's causal mask only when it is given an `attention_mask`, and under SDPA (its
default) only when that mask pads something: an all-ones mask is dropped and the tower runs bidirectionally. Apple's
reference, and jimm, are always causal: equal to transformers given a padding mask, or any mask with eager attention.

Dimension letters: I images, J texts, T tokens, P embedding width.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike
from jaxtyping import Array, Float

from ...common.sharding import AIMv2Sharding, ShardingSpec
from ...io.state import Slot
from ..image_text.model import ImageTextModel
from ..image_text.names import Parts, outer_slots
from .config import AIMv2LiTConfig
from .names import lit_name_table


class AIMv2(ImageTextModel):
    """AIMv2 LiT: `encode_image`, `encode_text`, `model(images, input_ids)` -> `logits_per_image`,
    `zero_shot(images, labels)` (a softmax over the labels). `jimm.AIMv2Model` is the vision tower alone."""

    SHARDING = AIMv2Sharding  # the default spec of `from_pretrained`
    CONFIG = AIMv2LiTConfig
    HF_PREFIX = "Aimv2"
    PROJECTS = True
    LOGIT_BIAS = False
    PROBABILITY = "softmax"
    STANDALONE = MappingProxyType({"vision": "jimm.AIMv2Model"})  # transformers' Aimv2VisionModel; no lone text class

    def __init__(
        self,
        *,
        config: AIMv2LiTConfig | None = None,
        attention_fn: Callable[..., Any] | None = None,
        vision_attention_fn: Callable[..., Any] | None = None,
        text_attention_fn: Callable[..., Any] | None = None,
        use_gradient_checkpointing: bool = False,
        rngs: nnx.Rngs | None = None,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        sharding: ShardingSpec | type | None = AIMv2Sharding,
        remat_policy: str | None = None,
        scan_layers: bool = True,
    ):
        """Build with random weights, in eval mode (default config: transformers' `Aimv2Config`, L/14 at 224 px)."""
        super().__init__(
            config=config if config is not None else AIMv2LiTConfig(),
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
    def initial_logit_scale_and_bias(cls, config: AIMv2LiTConfig) -> tuple[float, float]:
        return config.logit_scale_init_value, 0.0

    @classmethod
    def hf_name_table(cls, config: AIMv2LiTConfig, parts: Parts) -> list[Slot]:
        return lit_name_table(config, outer_slots(parts))

    def log_logit_scale(self) -> Float[Array, ""]:
        """transformers' `logit_scale.clamp(0, ln max_logit_scale)`: the temperature stays within [1, 100]."""
        stored = super().log_logit_scale()
        return jnp.clip(stored, 0.0, math.log(self.config.max_logit_scale))


__all__ = ["AIMv2"]
