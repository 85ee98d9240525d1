"""A self-supervised backbone with an optional linear classifier on `[CLS, mean(patch tokens)]`: DINOv2, DINOv3.

Maths only. The families differ in their config and name table; the model surface is shared: `model(x)` is
the class token after the final norm `[B, D]` (transformers' `pooler_output`), or logits `[B, C]` with a head
(transformers' `Dinov2ForImageClassification`: `Linear(2D, C)` on the class token next to the mean of the
patch tokens, register tokens excluded); the feature API comes from `VisionFeatures`.

Dimension letters: B batch, T tokens (class, registers, patches), D width, C classes.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float

from ..common import init as initializers
from ..common.placement import like, output, with_sharding
from ..common.sharding import resolve_sharding
from ..common.transformer import default_kernel_init, einsum
from ..common.vision import VisionFeatures, VisionTower


class BackboneModel(VisionFeatures, nnx.Module):
    """The shared body of `DINOv2Model` / `DINOv3Model`; subclasses set `config` and call `_build`."""

    config: Any

    def _build(
        self,
        config,
        *,
        do_classification: bool | None,
        attention_fn,
        use_gradient_checkpointing: bool,
        remat_policy: str | None,
        scan_layers: bool,
        rngs: nnx.Rngs | None,
        dtype,
        param_dtype,
        sharding,
    ) -> None:
        if do_classification is None:
            do_classification = config.num_labels > 0
        if do_classification and config.num_labels < 1:
            raise ValueError("a classification head needs num_classes >= 1 (or num_labels in the config)")
        if not do_classification and config.num_labels:
            config = config.replace(num_labels=0, id2label=None)
        rngs = nnx.Rngs(0) if rngs is None else rngs
        sharding = resolve_sharding(sharding)
        tower = config.tower()
        d, c = config.hidden_size, max(config.num_labels, 1)
        sharding.check_shapes({**tower.param_shapes(config.num_labels), "proj_kernel": (2 * d, c)})
        self.config = config
        self.do_classification = do_classification
        self.preprocessor_json: str | None = None  # the checkpoint's preprocessor_config.json, kept for saving
        self.dtype = dtype
        self.encoder = VisionTower(
            tower,
            attention_fn=attention_fn,
            use_gradient_checkpointing=use_gradient_checkpointing,
            remat_policy=remat_policy,
            scan_layers=scan_layers,
            sharding=sharding,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self.classifier = (
            nnx.Linear(
                2 * d,
                config.num_labels,
                dtype=dtype,
                param_dtype=param_dtype,
                kernel_init=with_sharding(default_kernel_init, sharding.proj_kernel),
                bias_init=with_sharding(initializers.zeros, sharding.proj_bias),
                rngs=rngs,
            )
            if do_classification
            else None
        )

    @property
    def num_classes(self) -> int:
        return self.config.num_labels

    @property
    def vision_tower(self) -> VisionTower:
        return self.encoder

    def head_input(self, features: Float[Array, "B T D"]) -> Float[Array, "B 2D"]:
        """`[CLS, mean of the patch tokens]` (registers excluded), what the classifier reads."""
        return jnp.concatenate([features[:, 0], self.encoder.patch_tokens(features).mean(axis=1)], axis=-1)

    def forward_head(self, features: Float[Array, "B T D"], pre_logits: bool = False) -> Float[Array, "B C"]:
        """Logits from `forward_features` output; `pre_logits=True` gives the classifier's input `[B, 2D]`.

        Without a head: the class token `[B, D]` (transformers' `pooler_output`).
        """
        if not self.do_classification:
            return self.encoder.pool(features)
        pooled = self.head_input(features)
        if pre_logits:
            return pooled
        kernel = self.classifier.kernel[...].astype(self.dtype)
        logits = einsum("BD,DC->BC", pooled.astype(self.dtype), kernel)
        return output(logits + like(self.classifier.bias[...], logits).astype(self.dtype))

    def __call__(self, x: Float[Array, "B height width C"]) -> Float[Array, "B C"]:
        """The class-token embedding `[B, D]`, or logits `[B, num_classes]` for a model with a head."""
        return self.forward_head(self.forward_features(x))


__all__ = ["BackboneModel"]
