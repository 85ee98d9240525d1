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

import os
from collections.abc import Callable
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import PartitionSpec
from jax.typing import DTypeLike
from jaxtyping import Array, Float, Int

from ...common.sharding import ShardingSpec, ViTSharding, resolve_sharding, shard, with_sharding
from ...common.text import TextTower
from ...common.transformer import default_kernel_init, einsum
from ...common.vision import VisionFeatures, VisionTower
from .names import Parts


class _Family:
    """Family rules (set by `jimm.CLIP`, `jimm.SigLIP` and their towers) and what every class shares."""

    CONFIG: ClassVar[type]  # the family's pair config class (`CLIPConfig`, `SiglipConfig`)
    HF_PREFIX: ClassVar[str]  # transformers' class prefix: "CLIP", "Siglip"
    PROJECTS: ClassVar[bool]  # CLIP: embeddings go through a projection; SigLIP has none
    LOGIT_BIAS: ClassVar[bool]  # SigLIP's learned logit bias (its logit scale is then `(1,)`, CLIP's 0-d)
    PROBABILITY: ClassVar[str]  # "softmax" over labels (CLIP) or "sigmoid" per logit (SigLIP)
    TOWERS: ClassVar[tuple[str, ...]]  # ("vision", "text"), ("vision",) or ("text",)

    config: Any
    dtype: DTypeLike
    preprocessor_json: str | None
    tokenizer: Any

    def _setup(self, config, sharding: ShardingSpec | None, dtype: DTypeLike) -> ShardingSpec:
        if not isinstance(config, self.CONFIG):
            raise TypeError(f"{type(self).__name__} takes a {self.CONFIG.__name__}, got {type(config).__name__}")
        self.config, self.dtype = config, dtype
        self.preprocessor_json = None  # the checkpoint's preprocessor_config.json, kept for saving
        self.tokenizer = None  # the checkpoint's `jimm.Tokenizer` (from_pretrained), for `tokenize` / `zero_shot`
        sharding = resolve_sharding(sharding)
        self.out_spec = sharding.act_bc
        return sharding

    def _linear(self, d_in: int, d_out: int, *, bias: bool, sharding: ShardingSpec, param_dtype, rngs) -> nnx.Linear:
        return nnx.Linear(
            d_in,
            d_out,
            use_bias=bias,
            dtype=self.dtype,
            param_dtype=param_dtype,
            kernel_init=with_sharding(default_kernel_init, sharding.proj_kernel),
            bias_init=with_sharding(nnx.initializers.zeros_init(), sharding.proj_bias),
            rngs=rngs,
        )

    def _apply(self, layer: nnx.Linear, x: Float[Array, "B D"]) -> Float[Array, "B P"]:
        out = einsum("BD,DP->BP", x.astype(self.dtype), layer.kernel[...].astype(self.dtype), self.out_spec)
        return out if layer.bias is None else out + layer.bias[...].astype(self.dtype)

    def _missing(self, what: str):
        other = {"vision": "an image", "text": "a text"}[self.TOWERS[0]]
        return ValueError(
            f"{type(self).__name__} has no {what} tower ({other} tower only); load a full "
            f"{self.HF_PREFIX} checkpoint with jimm.{self.CONFIG.FAMILY.split('.')[-1]}.from_pretrained for {what} "
            "embeddings and zero-shot classification"
        )

    # -- text helpers ------------------------------------------------------------------------------------------

    def tokenize(self, texts: str | list[str], *, max_length: int | None = None) -> np.ndarray:
        """`input_ids [B, L]` (int32) from the checkpoint's own tokenizer, padded to the text tower's length.

        Longer texts are truncated (keeping BOS/EOS) with a warning, once.
        """
        if "text" not in self.TOWERS:
            raise self._missing("text")
        if self.tokenizer is None:
            raise ValueError(
                f"this {type(self).__name__} has no tokenizer (built with from_config, or its folder had no "
                "tokenizer files); set model.tokenizer = jimm.Tokenizer.from_pretrained(FOLDER)"
            )
        limit = self.text_model.config.max_positions
        length = min(self.tokenizer.max_length, limit) if max_length is None else max_length
        return self.tokenizer(texts, max_length=length)["input_ids"]

    def zero_shot(self, images, labels, template: str = "a photo of a {}.", **kwargs) -> np.ndarray:
        """`[images, labels]` probabilities (softmax over labels for CLIP, a sigmoid per pair for SigLIP).

        `images`: file paths, PIL images or uint8 HWC arrays, preprocessed with the checkpoint's
        `preprocessor_config.json`; `labels` are formatted into `template` and tokenized with the checkpoint's
        tokenizer. Keyword arguments (`batch_size`, `progress`) go to `jimm.image_text.zero_shot`.
        """
        if set(self.TOWERS) != {"vision", "text"}:
            raise self._missing("text" if "text" not in self.TOWERS else "vision")
        from ...image_text import zero_shot

        return zero_shot(self, images, labels, template=template, **kwargs)

    # -- loading and saving --------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        model_name_or_path: str | os.PathLike,
        use_pytorch: bool = False,
        rngs: nnx.Rngs | None = None,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        sharding: ShardingSpec | None = ViTSharding,
        use_gradient_checkpointing: bool = False,
        attention_fn: Callable[..., Any] | None = None,
        **kwargs: Any,
    ):
        """Load a transformers checkpoint strictly (classic or transformers-v5 names), with its tokenizer.

        Args:
            model_name_or_path: A model folder or a hub repo id.
            use_pytorch: Prefer `pytorch_model.bin` over safetensors (needs torch).
            rngs: Random streams for a new classifier head and dropout; None means `nnx.Rngs(0)`.
            dtype, param_dtype: Computation and parameter dtypes (stored tensors are cast to `param_dtype`).
            sharding: Parameter specs, used under a mesh; each tensor goes straight onto its sharding.
            use_gradient_checkpointing: Rematerialise each block in the backward pass.
            attention_fn: Attention kernel for every tower; `vision_attention_fn=` / `text_attention_fn=`
                override it per tower. None is jax.nn's XLA path.
            **kwargs: `vision_attention_fn`, `text_attention_fn`, `remat_policy`, `scan_layers`, `revision`,
                `token`, `cache_dir`; for vision models also `num_classes`, `id2label` (a new classifier head)
                and `do_classification`.

        Returns:
            The model, in eval mode; `model.tokenizer` and `model.preprocessor_json` come from the folder.
        """
        from .pretrained import load_pretrained

        return load_pretrained(
            cls,
            model_name_or_path,
            prefer_pytorch=use_pytorch,
            rngs=rngs,
            dtype=dtype,
            param_dtype=param_dtype,
            sharding=sharding,
            use_gradient_checkpointing=use_gradient_checkpointing,
            attention_fn=attention_fn,
            **kwargs,
        )

    @classmethod
    def from_config(cls, config, *, rngs: nnx.Rngs | None = None, **kwargs: Any):
        """A randomly initialised model (in eval mode) from an HF config dict (pair or standalone tower layout,
        its `architectures` choosing the projection or classifier) or a family config object."""
        from .pretrained import build_from_config

        return build_from_config(cls, config, rngs=rngs, **kwargs)

    def save_pretrained(
        self, save_directory: str | os.PathLike, *, max_shard_size: int | str = "5GB", overwrite: bool = False
    ) -> None:
        """Write transformers' format (`config.json`, safetensors, the preprocessor config, the tokenizer files).

        The folder loads in the matching transformers class (`hf_architecture`) with no missing or unexpected
        keys. The save is atomic as a whole; files of the same names that jimm did not write are an error
        unless `overwrite=True`.
        """
        from .pretrained import save_pretrained

        save_pretrained(self, save_directory, max_shard_size=max_shard_size, overwrite=overwrite)


class ImageEncoder:
    """`encode_image` for every class with a vision tower at `self.vision_model`."""

    vision_model: VisionTower
    visual_projection: nnx.Linear | None

    @property
    def vision_tower(self) -> VisionTower:
        return self.vision_model

    def encode_image(self, images: Float[Array, "B height width C"], do_projection: bool = True) -> Float[Array, "B P"]:
        """One embedding per image: the pooled vision tower (CLIP: `post_layernorm` on the class token; SigLIP:
        the MAP head), then CLIP's `visual_projection` when `do_projection` (SigLIP has none). Not normalised.
        """
        if not getattr(self.config.vision_config, "vision_use_head", True):
            raise ValueError(
                "this SigLIP vision tower has no pooling head (vision_use_head=false), so it gives no image "
                "embedding; use forward_features for the tokens"
            )
        pooled = self.vision_model(jnp.asarray(images))
        if not (do_projection and self.PROJECTS):
            return pooled
        if self.visual_projection is None:
            raise ValueError(
                f"this {type(self).__name__} has no visual projection (its checkpoint is a CLIPVisionModel); "
                "pass do_projection=False for the pooled features, or load a CLIP / "
                "CLIPVisionModelWithProjection checkpoint"
            )
        return shard(self._apply(self.visual_projection, pooled), self.out_spec)


class TextEncoder:
    """`encode_text` for every class with a text tower at `self.text_model`."""

    text_model: TextTower
    text_projection: nnx.Linear | None

    def encode_text(
        self,
        input_ids: Int[Array, "B T"],
        attention_mask: Int[Array, "B T"] | None = None,
        *,
        do_projection: bool = True,
    ) -> Float[Array, "B P"]:
        """One embedding per text: the pooled text tower (SigLIP's includes its `head`), then CLIP's
        `text_projection` when `do_projection`. Not normalised.

        Args:
            input_ids: `[B, T]` ids with T at most the tower's positions (`model.tokenize` gives them).
            attention_mask: 1 on real tokens. CLIP's causal mask already hides right padding from the pooled
                token; SigLIP was trained without one (its pad token is meant to be attended).
        """
        ids = jnp.asarray(input_ids)
        mask = None if attention_mask is None else jnp.asarray(attention_mask)
        pooled = self.text_model(ids, mask)
        if not (do_projection and self.PROJECTS):
            return pooled
        if self.text_projection is None:
            raise ValueError(
                f"this {type(self).__name__} has no text projection (its checkpoint is a CLIPTextModel); pass "
                "do_projection=False for the pooled features, or load a CLIP / CLIPTextModelWithProjection checkpoint"
            )
        return shard(self._apply(self.text_projection, pooled), self.out_spec)


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


def _check(sharding: ShardingSpec, *shape_maps: dict) -> None:
    for shapes in shape_maps:
        sharding.check_shapes(shapes)


class ImageTextModel(_Family, ImageEncoder, TextEncoder, VisionFeatures, nnx.Module):
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
        sharding: ShardingSpec | None = ViTSharding,
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
        self.vision_model = VisionTower(parts.vision, attention_fn=vision_attention_fn or attention_fn, **common)
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
        self.logit_scale = nnx.Param(jnp.full(parts.logit_scale, scale, param_dtype))
        self.logit_bias = nnx.Param(jnp.full((1,), bias, param_dtype)) if self.LOGIT_BIAS else None

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
        )

    @classmethod
    def initial_logit_scale_and_bias(cls, config) -> tuple[float, float]:
        raise NotImplementedError

    @property
    def hf_architecture(self) -> str:
        return f"{self.HF_PREFIX}Model"

    def logits(self, image_embeds: Float[Array, "I P"], text_embeds: Float[Array, "J P"]) -> Float[Array, "I J"]:
        """`exp(logit_scale) * cos(image, text)` (+ `logit_bias`), image by text."""
        image = image_embeds / jnp.linalg.norm(image_embeds, axis=-1, keepdims=True)
        text = text_embeds / jnp.linalg.norm(text_embeds, axis=-1, keepdims=True)
        text = shard(text, PartitionSpec(None, None), "text embeddings")  # every image meets every text: gather them
        scale = jnp.exp(self.logit_scale[...].astype(jnp.float32)).reshape(())
        logits = jnp.einsum("IP,JP->IJ", image.astype(jnp.float32), text.astype(jnp.float32)) * scale
        if self.logit_bias is not None:
            logits = logits + self.logit_bias[...].astype(jnp.float32).reshape(())
        return shard(logits, self.out_spec)

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


class VisionModel(_Family, ImageEncoder, VisionFeatures, nnx.Module):
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
        sharding: ShardingSpec | None = ViTSharding,
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
        self.vision_model = VisionTower(parts.vision, attention_fn=attention_fn, **common)
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
        )

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
        return shard(self._apply(self.classifier, pooled), self.out_spec)

    def __call__(self, images: Float[Array, "B height width C"], do_projection: bool = True) -> Float[Array, "B P"]:
        """Class logits `[B, C]` with a classifier, else the image embedding (`encode_image`)."""
        if self.do_classification:
            return self.forward_head(self.forward_features(jnp.asarray(images)))
        return self.encode_image(images, do_projection)

    def encode_text(self, *args, **kwargs):
        raise self._missing("text")


class TextModel(_Family, TextEncoder, nnx.Module):
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
        sharding: ShardingSpec | None = ViTSharding,
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
