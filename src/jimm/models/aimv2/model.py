"""AIMv2Model: the AIMv2 vision encoder, equal to transformers' `Aimv2VisionModel`. Maths only.

"Multimodal Autoregressive Pre-training of Large Vision Encoders" (Fini et al., 2024): a ViT without a class
token, with RMSNorm (also on the patch tokens, before positions), SwiGLU, no attention biases, and an optional
attention-pooling head; the `-native` checkpoints use 2-D sin-cos positions and run at any resolution. All of
it is the shared `VisionTower` with the settings `AIMv2Config.tower()` names.

Dimension letters: B batch, P patches, D width.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike
from jaxtyping import Array, Float

from ...common.sharding import AIMv2Sharding, ShardingSpec, resolve_sharding
from ...common.vision import VisionFeatures, VisionTower
from .config import AIMv2Config


class AIMv2Model(VisionFeatures, nnx.Module):
    """AIMv2 vision encoder: `model(x)` is every patch token after the final RMSNorm `[B, P, D]` (HF
    `last_hidden_state`, the original jimm's output); `model.pooled(x)` is the attention-pooling head's `[B, D]`
    (HF `pooler_output`, when the config has `use_head`).

    Positional arguments and defaults are the original jimm's (AIMv2-B/14 widths, no head); `model.config` is the
    `AIMv2Config` it was built from.
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 14,
        in_channels: int = 3,
        hidden_size: int = 768,
        num_layers: int = 12,
        num_heads: int = 6,
        mlp_dim: int = 2048,
        rms_norm_eps: float = 1e-5,
        use_gradient_checkpointing: bool = False,
        attention_fn: Callable[..., Any] | None = None,
        rngs: nnx.Rngs | None = None,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        sharding: ShardingSpec | type | None = AIMv2Sharding,
        *,
        config: AIMv2Config | None = None,
        remat_policy: str | None = None,
        scan_layers: bool = True,
    ) -> None:
        """Build an AIMv2 vision encoder with random weights, in eval mode.

        Args:
            img_size: The native image size (the learned position table's grid); any size runs.
            patch_size: Patch size.
            in_channels: Input channels.
            hidden_size: Token width D.
            num_layers: Number of blocks.
            num_heads: Attention heads.
            mlp_dim: SwiGLU hidden width (`intermediate_size`).
            rms_norm_eps: RMSNorm epsilon.
            use_gradient_checkpointing: Rematerialise each block in the backward pass.
            attention_fn: Attention kernel `fn(q, k, v, *, mask=None, bias=None)`; None is jax.nn's XLA path.
            rngs: Random streams for init.
            dtype: Computation dtype.
            param_dtype: Parameter dtype.
            sharding: Parameter and activation specs, used only under a mesh (`jax.set_mesh`).
            config: A complete `AIMv2Config` (head, sin-cos positions, biases); replaces the arguments above.
            remat_policy: A `jax.checkpoint_policies` name; turns checkpointing on.
            scan_layers: Stacked, scanned blocks (default) or a python list of blocks.
        """
        if config is None:
            config = AIMv2Config(
                image_size=img_size,
                patch_size=patch_size,
                num_channels=in_channels,
                hidden_size=hidden_size,
                num_hidden_layers=num_layers,
                num_attention_heads=num_heads,
                intermediate_size=mlp_dim,
                rms_norm_eps=rms_norm_eps,
                use_head=False,  # the original's AIMv2Model returns the patch tokens and has no head
            )
        elif not isinstance(config, AIMv2Config):
            raise TypeError(f"AIMv2Model needs an AIMv2Config, got {type(config).__name__}")
        sharding = resolve_sharding(sharding)
        tower = config.tower()
        sharding.check_shapes(tower.param_shapes())
        self.config, self.dtype = config, dtype
        self.preprocessor_json: str | None = None  # the checkpoint's preprocessor_config.json, kept for saving
        self.encoder = VisionTower(
            tower,
            attention_fn=attention_fn,
            use_gradient_checkpointing=use_gradient_checkpointing,
            remat_policy=remat_policy,
            scan_layers=scan_layers,
            sharding=sharding,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=nnx.Rngs(0) if rngs is None else rngs,
        )

    @property
    def vision_tower(self) -> VisionTower:
        return self.encoder

    def forward_head(self, features: Float[Array, "B P D"]) -> Float[Array, "B D"]:
        """The attention-pooling head on `forward_features` output (HF `pooler_output`)."""
        if not self.config.use_head:
            raise ValueError("this AIMv2 model has no pooling head (use_head=False): use the patch tokens, model(x)")
        return self.encoder.pool(features)

    def pooled(self, x: Float[Array, "B height width C"]) -> Float[Array, "B D"]:
        """One vector per image from the attention-pooling head (HF `pooler_output`)."""
        return self.forward_head(self.forward_features(x))

    def __call__(self, x: Float[Array, "B height width C"]) -> Float[Array, "B P D"]:
        """Every patch token after the final RMSNorm (HF `last_hidden_state`)."""
        return self.forward_features(x)

    @classmethod
    def from_config(
        cls,
        config: dict[str, Any] | AIMv2Config,
        *,
        rngs: nnx.Rngs | None = None,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        sharding: ShardingSpec | type | None = AIMv2Sharding,
        use_gradient_checkpointing: bool = False,
        attention_fn: Callable[..., Any] | None = None,
        remat_policy: str | None = None,
        scan_layers: bool = True,
    ) -> AIMv2Model:
        """A randomly initialised model (in eval mode) from an HF config dict or an `AIMv2Config`."""
        if not isinstance(config, AIMv2Config):
            config = AIMv2Config.from_hf_dict(config)
        return cls(
            config=config,
            rngs=rngs,
            dtype=dtype,
            param_dtype=param_dtype,
            sharding=sharding,
            use_gradient_checkpointing=use_gradient_checkpointing,
            attention_fn=attention_fn,
            remat_policy=remat_policy,
            scan_layers=scan_layers,
        )

    @classmethod
    def from_pretrained(
        cls,
        model_name_or_path: str | os.PathLike,
        use_pytorch: bool = False,
        rngs: nnx.Rngs | None = None,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        sharding: ShardingSpec | type | None = AIMv2Sharding,
        use_gradient_checkpointing: bool = False,
        attention_fn: Callable[..., Any] | None = None,
        *,
        revision: str | None = None,
        token: str | bool | None = None,
        cache_dir: str | os.PathLike | None = None,
        remat_policy: str | None = None,
        scan_layers: bool = True,
        config: AIMv2Config | None = None,
    ) -> AIMv2Model:
        """Load a transformers AIMv2 vision checkpoint strictly (`aimv2_vision_model`, or the vision tower of an
        `aimv2` LiT pair), from a folder, a weights file or a hub id."""
        from ..pretrained import load_pretrained
        from .pretrained import FAMILY

        return load_pretrained(
            cls,
            FAMILY,
            model_name_or_path,
            prefer_pytorch=use_pytorch,
            config=config,
            rngs=rngs,
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            dtype=dtype,
            param_dtype=param_dtype,
            sharding=sharding,
            use_gradient_checkpointing=use_gradient_checkpointing,
            attention_fn=attention_fn,
            remat_policy=remat_policy,
            scan_layers=scan_layers,
        )

    def save_pretrained(
        self, save_directory: str | os.PathLike, *, max_shard_size: int | str = "5GB", overwrite: bool = False
    ) -> None:
        """Write `config.json`, `model.safetensors` and `preprocessor_config.json` (atomically); the folder loads
        in transformers' `Aimv2VisionModel` with no missing or unexpected keys."""
        from ..pretrained import save_pretrained
        from .pretrained import FAMILY

        save_pretrained(self, FAMILY, save_directory, max_shard_size=max_shard_size, overwrite=overwrite)


__all__ = ["AIMv2Model"]
