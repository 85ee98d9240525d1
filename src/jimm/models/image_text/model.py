"""The two-tower image-text models CLIP and SigLIP share, and their standalone towers. Maths only.

Three bases, each a family's class derives from (`jimm.CLIP(ImageTextModel)`, `jimm.CLIPVisionModel(VisionModel)`,
`jimm.CLIPTextModel(TextModel)`, and SigLIP's alike); a family sets its config class, its transformers class
prefix and the few rules below, and translates the original jimm's positional arguments into a config.

| | CLIP | SigLIP |
|---|---|---|
| image / text embedding | pooled tower -> `visual_projection` / `text_projection` (no bias) | MAP head / text `head` |
| logits | `exp(logit_scale) * cos` (0-d scale) | `exp(logit_scale) * cos + logit_bias` (shapes `(1,)`) |
| zero-shot probabilities | softmax over the labels | sigmoid of each logit |

Dimension letters: B batch (images `I`, texts `J` where both appear), T tokens, D width, P embedding width,
C classes. Images are NHWC `[B, height, width, channels]`, any size divisible by the patch size (position
embeddings are resampled exactly as transformers' `interpolate_pos_encoding=True`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import DTypeLike
from jaxtyping import Array, Float, Int

from ...common.placement import gathered, like, output
from ...common.sharding import Plan, ShardingSpec, ViTSharding
from ...common.text import TextTower
from ...common.vision import VisionFeatures
from .base import Family, ImageEncoder, TextEncoder
from .names import Parts


def _towers_kwargs(use_gradient_checkpointing, remat_policy, scan_layers, sharding, dtype, param_dtype, rngs):
    return dict(
        use_gradient_checkpointing=use_gradient_checkpointing,
        remat_policy=remat_policy,
        scan_layers=scan_layers,
        sharding=sharding,
        dtype=dtype,
        param_dtype=param_dtype,
        rngs=rngs,
    )


def _check(sharding: Plan, *shape_maps: dict) -> None:
    for shapes in shape_maps:
        sharding.check_shapes(shapes)


class ImageTextModel(Family, ImageEncoder, TextEncoder, VisionFeatures, nnx.Module):
    """Both towers, CLIP's projections, the logit scale (and SigLIP's bias); `model(images, input_ids)` is the
    image-by-text logits matrix, equal to transformers' `logits_per_image`."""

    TOWERS = ("vision", "text")

    def __init__(
        self,
        *,
        config,
        attention_fn: Callable[..., Any] | None = None,
        vision_attention_fn: Callable[..., Any] | None = None,
        text_attention_fn: Callable[..., Any] | None = None,
        use_gradient_checkpointing: bool = False,
        rngs: nnx.Rngs | None = None,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        sharding: ShardingSpec | type | None = ViTSharding,
        remat_policy: str | None = None,
        scan_layers: bool = True,
    ):
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        sharding = self._setup(config, sharding, dtype)
        parts = self.parts(config)
        _check(sharding, parts.vision.param_shapes(), parts.text.param_shapes())
        common = _towers_kwargs(
            use_gradient_checkpointing, remat_policy, scan_layers, sharding, dtype, param_dtype, rngs
        )
        self.vision_model = self.VISION_TOWER(parts.vision, attention_fn=vision_attention_fn or attention_fn, **common)
        self.text_model = TextTower(parts.text, attention_fn=text_attention_fn or attention_fn, **common)
        linear = dict(bias=False, sharding=sharding, param_dtype=param_dtype, rngs=rngs)
        d_v, d_t, p = parts.vision.hidden_size, parts.text.hidden_size, parts.visual_projection
        self.visual_projection = self._linear(d_v, p, **linear) if p is not None else None
        self.text_projection = self._linear(d_t, p, **linear) if p is not None else None
        if not self.PROJECTS and self.text_model.output_size != d_v:
            raise ValueError(
                f"the text head's width {self.text_model.output_size} (projection_size) differs from the image "
                f"width {d_v}: image and text embeddings must have the same width"
            )
        scale, bias = self.initial_logit_scale_and_bias(config)
        self.logit_scale = nnx.Param(jnp.asarray(np.full(parts.logit_scale, scale, np.dtype(param_dtype))))
        self.logit_bias = (
            nnx.Param(jnp.asarray(np.full((1,), bias, np.dtype(param_dtype)))) if self.LOGIT_BIAS else None
        )

    @classmethod
    def parts(cls, config) -> Parts:
        p = config.projection_dim if cls.PROJECTS else None
        return Parts(
            vision=config.vision_config.tower(),
            text=config.text_config.tower(),
            visual_projection=p,
            text_projection=p,
            logit_scale=(1,) if cls.LOGIT_BIAS else (),
            logit_bias=cls.LOGIT_BIAS,
            linear_patches=cls.LINEAR_PATCHES,
        )

    def held_parts(self) -> Parts:
        """What this model holds, for its name table."""
        return self.parts(self.config)

    @classmethod
    def initial_logit_scale_and_bias(cls, config) -> tuple[float, float]:
        raise NotImplementedError

    @property
    def hf_architecture(self) -> str:
        return f"{self.HF_PREFIX}Model"

    def log_logit_scale(self) -> Float[Array, ""]:
        """The log of the logits' temperature, as stored (CLIP, SigLIP); AIMv2 clamps it first."""
        return self.logit_scale[...].astype(jnp.float32).reshape(())

    def logits(self, image_embeds: Float[Array, "I P"], text_embeds: Float[Array, "J P"]) -> Float[Array, "I J"]:
        """`exp(logit_scale) * cos(image, text)` (+ `logit_bias`), image by text."""
        image = image_embeds / jnp.linalg.norm(image_embeds, axis=-1, keepdims=True)
        text = text_embeds / jnp.linalg.norm(text_embeds, axis=-1, keepdims=True)
        text = gathered(text)  # every image meets every text: the logits keep the images' batch sharding
        scale = jnp.exp(self.log_logit_scale())
        logits = jnp.einsum("IP,JP->IJ", image.astype(jnp.float32), text.astype(jnp.float32)) * scale
        if self.logit_bias is not None:
            logits = logits + like(self.logit_bias[...], logits).astype(jnp.float32).reshape(())
        return output(logits)

    def probabilities(self, logits: Float[Array, "I J"]) -> Float[Array, "I J"]:
        """Zero-shot probabilities from logits: a softmax over the texts (CLIP) or a sigmoid per pair (SigLIP)."""
        return jax.nn.softmax(logits, axis=-1) if self.PROBABILITY == "softmax" else jax.nn.sigmoid(logits)

    def __call__(
        self,
        images: Float[Array, "I height width C"],
        input_ids: Int[Array, "J T"],
        attention_mask: Int[Array, "J T"] | None = None,
    ) -> Float[Array, "I J"]:
        """The image-by-text logits matrix (transformers' `logits_per_image`); images and texts may differ in number."""
        return self.logits(self.encode_image(images), self.encode_text(input_ids, attention_mask))


class VisionModel(Family, ImageEncoder, VisionFeatures, nnx.Module):
    """The vision tower alone, with CLIP's optional projection and an optional classifier head.

    The classifier mirrors transformers' `CLIPForImageClassification` / `SiglipForImageClassification`: a linear
    layer on the mean of the patch tokens of the final tokens (CLIP: the un-normed `last_hidden_state` without
    the class token; SigLIP: every `post_layernorm`ed token), so fine-tunes save in their format.
    """

    TOWERS = ("vision",)

    def __init__(
        self,
        *,
        config,
        with_projection: bool = False,
        do_classification: bool = False,
        attention_fn: Callable[..., Any] | None = None,
        use_gradient_checkpointing: bool = False,
        rngs: nnx.Rngs | None = None,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        sharding: ShardingSpec | type | None = ViTSharding,
        remat_policy: str | None = None,
        scan_layers: bool = True,
    ):
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        sharding = self._setup(config, sharding, dtype)
        if with_projection and not self.PROJECTS:
            raise ValueError(f"{type(self).__name__} has no projection (with_projection=True is CLIP's)")
        if do_classification and config.num_labels < 1:
            raise ValueError("do_classification=True needs num_classes >= 1")
        parts = self.parts(config, with_projection=with_projection, do_classification=do_classification)
        _check(sharding, parts.vision.param_shapes(parts.num_labels or 0))
        self.do_classification = do_classification
        common = _towers_kwargs(
            use_gradient_checkpointing, remat_policy, scan_layers, sharding, dtype, param_dtype, rngs
        )
        self.vision_model = self.VISION_TOWER(parts.vision, attention_fn=attention_fn, **common)
        d, linear = parts.vision.hidden_size, dict(sharding=sharding, param_dtype=param_dtype, rngs=rngs)
        p = parts.visual_projection
        self.visual_projection = self._linear(d, p, bias=False, **linear) if p is not None else None
        self.classifier = self._linear(d, parts.num_labels, bias=True, **linear) if do_classification else None

    @classmethod
    def parts(cls, config, *, with_projection: bool = False, do_classification: bool = False) -> Parts:
        return Parts(
            vision=config.vision_config.tower(),
            visual_projection=config.vision_config.projection_dim if with_projection else None,
            num_labels=config.num_labels if do_classification else None,
            linear_patches=cls.LINEAR_PATCHES,
        )

    def held_parts(self) -> Parts:
        """What this model holds, for its name table."""
        projection = {"with_projection": self.visual_projection is not None} if self.PROJECTS else {}
        return self.parts(self.config, do_classification=self.do_classification, **projection)

    @property
    def num_classes(self) -> int:
        return self.config.num_labels

    @property
    def hf_architecture(self) -> str:
        if self.do_classification:
            return f"{self.HF_PREFIX}ForImageClassification"
        return f"{self.HF_PREFIX}VisionModel" + ("WithProjection" if self.visual_projection is not None else "")

    def forward_head(self, features: Float[Array, "B T D"], pre_logits: bool = False) -> Float[Array, "B C"]:
        """The classifier on the mean patch token (transformers' `...ForImageClassification`); `pre_logits=True`
        returns the mean itself."""
        pooled = self.vision_model.patch_tokens(features).mean(axis=1)
        if pre_logits or not self.do_classification:
            return pooled
        return self._apply(self.classifier, pooled)

    def __call__(self, images: Float[Array, "B height width C"], do_projection: bool = True) -> Float[Array, "B P"]:
        """Class logits `[B, C]` with a classifier, else the image embedding (`encode_image`)."""
        if self.do_classification:
            return self.forward_head(self.forward_features(jnp.asarray(images)))
        return self.encode_image(images, do_projection)

    def encode_text(self, *args, **kwargs):
        raise self._missing("text")


class TextModel(Family, TextEncoder, nnx.Module):
    """The text tower alone, with CLIP's optional projection; `model(input_ids)` is `encode_text`."""

    TOWERS = ("text",)

    def __init__(
        self,
        *,
        config,
        with_projection: bool = False,
        attention_fn: Callable[..., Any] | None = None,
        use_gradient_checkpointing: bool = False,
        rngs: nnx.Rngs | None = None,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        sharding: ShardingSpec | type | None = ViTSharding,
        remat_policy: str | None = None,
        scan_layers: bool = True,
    ):
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        sharding = self._setup(config, sharding, dtype)
        if with_projection and not self.PROJECTS:
            raise ValueError(f"{type(self).__name__} has no projection (with_projection=True is CLIP's)")
        parts = self.parts(config, with_projection=with_projection)
        _check(sharding, parts.text.param_shapes())
        common = _towers_kwargs(
            use_gradient_checkpointing, remat_policy, scan_layers, sharding, dtype, param_dtype, rngs
        )
        self.text_model = TextTower(parts.text, attention_fn=attention_fn, **common)
        p = parts.text_projection
        linear = dict(bias=False, sharding=sharding, param_dtype=param_dtype, rngs=rngs)
        self.text_projection = self._linear(parts.text.hidden_size, p, **linear) if p is not None else None

    @classmethod
    def parts(cls, config, *, with_projection: bool = False) -> Parts:
        return Parts(
            text=config.text_config.tower(),
            text_projection=config.text_config.projection_dim if with_projection else None,
        )

    def held_parts(self) -> Parts:
        """What this model holds, for its name table."""
        return self.parts(self.config, with_projection=self.text_projection is not None)

    @property
    def hf_architecture(self) -> str:
        return f"{self.HF_PREFIX}TextModel" + ("WithProjection" if self.text_projection is not None else "")

    def hidden_states(self, input_ids: Int[Array, "B T"], attention_mask: Int[Array, "B T"] | None = None):
        """The embeddings and every block's output (HF `output_hidden_states=True`), un-normalised."""
        return self.text_model.hidden_states(jnp.asarray(input_ids), attention_mask)

    def __call__(
        self, input_ids: Int[Array, "B T"], attention_mask: Int[Array, "B T"] | None = None, do_projection: bool = True
    ) -> Float[Array, "B P"]:
        return self.encode_text(input_ids, attention_mask, do_projection=do_projection)

    def encode_image(self, *args, **kwargs):
        raise self._missing("vision")


__all__ = ["ImageTextModel", "TextModel", "VisionModel"]
