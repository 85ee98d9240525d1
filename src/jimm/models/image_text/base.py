"""What every CLIP / SigLIP class shares: the family rules a family class sets, the text helpers (`tokenize`,
`zero_shot`), the loading and saving classmethods, and the two encoders (`encode_image`, `encode_text`).

Dimension letters: B batch, T tokens, D width, P embedding width.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import DTypeLike
from jaxtyping import Array, Float, Int

from ...common import init as initializers
from ...common.placement import like, output, with_sharding
from ...common.sharding import Plan, ShardingSpec, ViTSharding, resolve_sharding
from ...common.text import TextTower
from ...common.transformer import default_kernel_init, einsum
from ...common.vision import VisionTower
from ...io.state import Slot
from .names import Parts, name_table


class Family:
    """Family rules (set by `jimm.CLIP`, `jimm.SigLIP` and their towers) and what every class shares."""

    CONFIG: ClassVar[type]  # the family's pair config class (`CLIPConfig`, `SiglipConfig`)
    HF_PREFIX: ClassVar[str]  # transformers' class prefix: "CLIP", "Siglip"
    PROJECTS: ClassVar[bool]  # CLIP: embeddings go through a projection; SigLIP has none
    LOGIT_BIAS: ClassVar[bool]  # SigLIP's learned logit bias (its logit scale is then `(1,)`, CLIP's 0-d)
    PROBABILITY: ClassVar[str]  # "softmax" over labels (CLIP) or "sigmoid" per logit (SigLIP)
    TOWERS: ClassVar[tuple[str, ...]]  # ("vision", "text"), ("vision",) or ("text",)
    VISION_TOWER: ClassVar[type] = VisionTower  # SigLIP 2 NaFlex: `NaFlexTower`, which takes pre-cut patches
    LINEAR_PATCHES: ClassVar[bool] = False  # the checkpoint's patch embedding is a Linear, not a conv (NaFlex)
    # The jimm classes of a lone tower's checkpoint, where they are not `{FAMILY}VisionModel` / `{FAMILY}TextModel`
    STANDALONE: ClassVar[Mapping[str, str] | None] = None
    do_classification: bool = False  # only vision models can have a classifier (`jimm predict` checks this)

    config: Any
    dtype: DTypeLike
    preprocessor_json: str | None
    tokenizer: Any

    def _setup(self, config, sharding: ShardingSpec | None, dtype: DTypeLike) -> Plan:
        if not isinstance(config, self.CONFIG):
            raise TypeError(f"{type(self).__name__} takes a {self.CONFIG.__name__}, got {type(config).__name__}")
        self.config, self.dtype = config, dtype
        self.preprocessor_json = None  # the checkpoint's preprocessor_config.json, kept for saving
        self.tokenizer = None  # the checkpoint's `jimm.Tokenizer` (from_pretrained), for `tokenize` / `zero_shot`
        return resolve_sharding(sharding)

    def _linear(self, d_in: int, d_out: int, *, bias: bool, sharding: Plan, param_dtype, rngs) -> nnx.Linear:
        return nnx.Linear(
            d_in,
            d_out,
            use_bias=bias,
            dtype=self.dtype,
            param_dtype=param_dtype,
            kernel_init=with_sharding(default_kernel_init, sharding.proj_kernel),
            bias_init=with_sharding(initializers.zeros, sharding.proj_bias),
            rngs=rngs,
        )

    def _apply(self, layer: nnx.Linear, x: Float[Array, "B D"]) -> Float[Array, "B P"]:
        out = einsum("BD,DP->BP", x.astype(self.dtype), layer.kernel[...].astype(self.dtype))
        return output(out if layer.bias is None else out + like(layer.bias[...], out).astype(self.dtype))

    def _missing(self, what: str):
        other = {"vision": "an image", "text": "a text"}[self.TOWERS[0]]
        return ValueError(
            f"{type(self).__name__} has no {what} tower ({other} tower only); load a full "
            f"{self.HF_PREFIX} checkpoint with jimm.{self.CONFIG.FAMILY.split('.')[-1]}.from_pretrained for {what} "
            "embeddings and zero-shot classification"
        )

    def export(self, out, *, format: str = "onnx", **kwargs):
        """Write this model's towers as ONNX or StableHLO files into the folder `out`, with the preprocessing
        facts beside them; keyword arguments go to `jimm.export.export_model`. Returns the paths written."""
        from ...export import export_model

        return export_model(self, out, format=format, **kwargs)

    @classmethod
    def hf_name_table(cls, config, parts: Parts) -> list[Slot]:
        """Every HF tensor of a model of this family holding `parts` (loading and saving): CLIP's and SigLIP's
        follow from the parts; a family whose towers transformers names otherwise (AIMv2) supplies its own."""
        return name_table(parts)

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
        tokenizer. Keyword arguments (`batch_size`, `progress`, SigLIP 2 NaFlex's `max_num_patches`) go to
        `jimm.image_text.zero_shot`.
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
        sharding: ShardingSpec | type | None = ViTSharding,
        use_gradient_checkpointing: bool = False,
        attention_fn: Callable[..., Any] | None = None,
        **kwargs: Any,
    ):
        """Load a transformers checkpoint strictly (classic or transformers-v5 names), with its tokenizer.

        Args:
            model_name_or_path: A model folder or a hub repo id.
            use_pytorch: Prefer `pytorch_model.bin` over safetensors (needs torch).
            rngs: Random streams for a new classifier head and dropout; None means `nnx.Rngs(0)`.
            dtype: Computation dtype.
            param_dtype: Parameter dtype; stored tensors are cast to it.
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

        if sharding is ViTSharding:  # the family's own default (CLIPSharding, SigLIPSharding)
            sharding = getattr(cls, "SHARDING", ViTSharding)
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
        """A randomly initialised model (in eval mode) from an HF config dict or a family config object.

        A dict may be the pair or a standalone tower's layout; its `architectures` choose CLIP's projection and a
        vision model's classifier unless `with_projection=` / `do_classification=` say. Other keyword arguments
        are the constructor's (`dtype`, `sharding`, `attention_fn`, ...).
        """
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
        return self._apply(self.visual_projection, pooled)


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
        return self._apply(self.text_projection, pooled)


__all__ = ["Family", "ImageEncoder", "TextEncoder"]
