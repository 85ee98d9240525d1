"""SigLIP 2 NaFlex (Tschannen et al., 2025, "SigLIP 2"), equal to transformers' `Siglip2Model`: SigLIP's two
towers and sigmoid logits, with the NaFlex vision tower (`jimm.common.naflex`), which takes each image at its own
aspect ratio as `NaFlexInputs` (`jimm.data.naflex.preprocess_naflex`). The maths is shared with CLIP and SigLIP
(`jimm.models.image_text.model`); this module holds only what SigLIP 2 changes.

Dimension letters: I images, J texts, T tokens, M patch slots, P embedding width.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike
from jaxtyping import Array, Bool, Float, Int

from ...common.naflex import NaFlexInputs, NaFlexTower
from ...common.sharding import ShardingSpec, SigLIPSharding
from ...common.vision import masked_mean
from ..image_text.model import ImageTextModel, TextModel, VisionModel
from ..siglip.model import SigLIP, _SiglipFamily
from .config import Siglip2Config


class _Siglip2Family(_SiglipFamily):
    CONFIG = Siglip2Config
    HF_PREFIX = "Siglip2"
    VISION_TOWER = NaFlexTower
    NAFLEX = True  # images go through jimm.data.naflex, not the fixed-size processors
    LINEAR_PATCHES = True  # transformers stores the patch embedding as a Linear over flattened patches


def _encode_image(self, inputs: NaFlexInputs, do_projection: bool = True) -> Float[Array, "I P"]:
    """One embedding per image: the masked MAP head over its real patches. Not normalised."""
    if not self.config.vision_config.vision_use_head:
        raise ValueError(
            "this SigLIP 2 vision tower has no pooling head (vision_use_head=false), so it gives no image "
            "embedding; use forward_features for the tokens"
        )
    return self.vision_model(inputs)


def _preprocess(self, images, *, max_num_patches: int | None = None) -> NaFlexInputs:
    """Images (files, PIL images or uint8 HWC arrays, any sizes) -> `NaFlexInputs` of numpy arrays, with the
    checkpoint's processor (`jimm.data.naflex`) at its patch budget or `max_num_patches`."""
    from ...data.naflex import NaFlexProcessorConfig, preprocess_naflex
    from ...image_text import as_image_list

    config = NaFlexProcessorConfig.for_model(self, max_num_patches=max_num_patches)
    return preprocess_naflex(as_image_list(images), config)


class SigLIP2(_Siglip2Family, ImageTextModel):
    """SigLIP 2 NaFlex's two towers: `encode_image(NaFlexInputs)`, `encode_text`, `model(inputs, input_ids)` ->
    `logits_per_image`, `zero_shot(images, labels, max_num_patches=...)` (a sigmoid per image-label pair)."""

    def __init__(
        self,
        *,
        config: Siglip2Config | None = None,
        attention_fn: Callable[..., Any] | None = None,
        vision_attention_fn: Callable[..., Any] | None = None,
        text_attention_fn: Callable[..., Any] | None = None,
        use_gradient_checkpointing: bool = False,
        rngs: nnx.Rngs | None = None,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        sharding: ShardingSpec | type | None = SigLIPSharding,
        remat_policy: str | None = None,
        scan_layers: bool = True,
    ):
        """Build with random weights, in eval mode (default config: B/16 NaFlex, 256 position rows)."""
        super().__init__(
            config=config if config is not None else Siglip2Config(),
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

    initial_logit_scale_and_bias = SigLIP.initial_logit_scale_and_bias

    encode_image = _encode_image
    preprocess = _preprocess

    def __call__(
        self,
        inputs: NaFlexInputs,
        input_ids: Int[Array, "J T"],
        attention_mask: Int[Array, "J T"] | None = None,
    ) -> Float[Array, "I J"]:
        """The image-by-text logits matrix (transformers' `logits_per_image`)."""
        return self.logits(self.encode_image(inputs), self.encode_text(input_ids, attention_mask))


class SigLIP2VisionModel(_Siglip2Family, VisionModel):
    """SigLIP 2 NaFlex's vision tower alone (transformers' `Siglip2VisionModel`), with the feature API on
    `NaFlexInputs`, and optionally transformers' `Siglip2ForImageClassification` head: a linear layer on the mean
    of each image's real patch tokens."""

    def __init__(
        self,
        *,
        config: Siglip2Config | None = None,
        attention_fn: Callable[..., Any] | None = None,
        use_gradient_checkpointing: bool = False,
        do_classification: bool = False,
        num_classes: int | None = None,
        id2label: dict[int, str] | None = None,
        rngs: nnx.Rngs | None = None,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        sharding: ShardingSpec | type | None = SigLIPSharding,
        remat_policy: str | None = None,
        scan_layers: bool = True,
    ):
        """Build with random weights, in eval mode. `num_classes` / `id2label` set the classifier's classes
        (`do_classification=True` adds it)."""
        config = config if config is not None else Siglip2Config()
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

    encode_image = _encode_image
    preprocess = _preprocess

    def forward_head(
        self, features: Float[Array, "I M D"], pre_logits: bool = False, *, mask: Bool[Array, "I M"] | None = None
    ) -> Float[Array, "I C"]:
        """The classifier on the mean of the real patch tokens (`mask`, True = real; all tokens without one);
        `pre_logits=True` returns the mean itself."""
        pooled = masked_mean(features, mask)
        if pre_logits or not self.do_classification:
            return pooled
        return self._apply(self.classifier, pooled)

    def __call__(self, inputs: NaFlexInputs, do_projection: bool = True) -> Float[Array, "I P"]:
        """Class logits `[I, C]` with a classifier, else the image embedding (`encode_image`)."""
        if self.do_classification:
            features = self.forward_features(inputs)
            return self.forward_head(features, mask=self.vision_model.token_mask(inputs))
        return self.encode_image(inputs)


class SigLIP2TextModel(_Siglip2Family, TextModel):
    """SigLIP 2's text tower alone (transformers' `Siglip2TextModel`), its `head` included."""

    def __init__(
        self,
        *,
        config: Siglip2Config | None = None,
        attention_fn: Callable[..., Any] | None = None,
        use_gradient_checkpointing: bool = False,
        rngs: nnx.Rngs | None = None,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        sharding: ShardingSpec | type | None = SigLIPSharding,
        remat_policy: str | None = None,
        scan_layers: bool = True,
    ):
        """Build with random weights, in eval mode."""
        super().__init__(
            config=config if config is not None else Siglip2Config(),
            attention_fn=attention_fn,
            use_gradient_checkpointing=use_gradient_checkpointing,
            rngs=rngs,
            dtype=dtype,
            param_dtype=param_dtype,
            sharding=sharding,
            remat_policy=remat_policy,
            scan_layers=scan_layers,
        )


__all__ = ["SigLIP2", "SigLIP2TextModel", "SigLIP2VisionModel"]
