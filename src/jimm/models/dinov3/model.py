"""DINOv3Model: the DINOv3 ViT, equal to transformers' `DINOv3ViTModel`. Maths only.

"DINOv3" (Siméoni et al., 2025): a ViT with 2-D rotary position embeddings on the patch tokens (any grid,
no resampling), register tokens, LayerScale, no key bias, and a gated SiLU MLP in the S+/H+/7B sizes.

Dimension letters: B batch, T tokens (class, registers, patches), D width, C classes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from ...common.sharding import DINOv3Sharding, ShardingSpec
from ..backbone import BackboneModel
from .config import DINOv3Config


class DINOv3Model(BackboneModel):
    """DINOv3 ViT backbone: `model(x)` is the class token after the final LayerNorm `[B, D]` (HF `pooler_output`).

    With a head (`num_classes=`) `model(x)` is the logits of jimm's `Linear(2D, C)` on `[CLS, mean(patch
    tokens)]` (transformers has no DINOv3 classifier). Positional arguments and defaults are the original
    jimm's (ViT-S/16, 4 registers); `model.config` is the `DINOv3Config` it was built from.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int | tuple[int, int] = 16,
        in_channels: int = 3,
        hidden_size: int = 384,
        num_layers: int = 12,
        num_heads: int = 6,
        mlp_dim: int = 1536,
        num_register_tokens: int = 4,
        rope_theta: float = 100.0,
        layer_scale_init: float = 1.0,
        layernorm_epsilon: float = 1e-5,
        hidden_act: str = "gelu",
        use_gated_mlp: bool = False,
        use_patch_bias: bool = True,
        key_bias: bool = False,
        use_gradient_checkpointing: bool = False,
        attention_fn: Callable[..., Any] | None = None,
        rngs: nnx.Rngs | None = None,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        sharding: ShardingSpec | type | None = DINOv3Sharding,
        *,
        num_classes: int | None = None,
        id2label: dict[int, str] | None = None,
        do_classification: bool | None = None,
        config: DINOv3Config | None = None,
        remat_policy: str | None = None,
        scan_layers: bool = True,
    ) -> None:
        """Build a DINOv3 ViT with random weights, in eval mode.

        Args:
            img_size: The native image size (`config.image_size`); any size of at least one patch runs.
            patch_size: Patch size (an int or `(height, width)`).
            in_channels: Input channels.
            hidden_size: Token width D.
            num_layers: Number of blocks.
            num_heads: Attention heads (the head width must be divisible by 4 for 2-D RoPE).
            mlp_dim: MLP hidden width (`intermediate_size`).
            num_register_tokens: Register tokens between the class token and the patches.
            rope_theta: RoPE base period.
            layer_scale_init: LayerScale's initial value.
            layernorm_epsilon: LayerNorm epsilon.
            hidden_act: MLP activation (HF name; "silu" for the gated sizes).
            use_gated_mlp: `down(act(gate(x)) * up(x))` instead of `down(act(up(x)))`.
            use_patch_bias: A bias on the patch projection (transformers always has one).
            key_bias: A bias on the key projection (DINOv3 has none; query and value have one).
            use_gradient_checkpointing: Rematerialise each block in the backward pass.
            attention_fn: Attention kernel `fn(q, k, v, *, mask=None, bias=None)`; None is jax.nn's XLA path.
            rngs: Random streams for init (`params`), dropout and RoPE augmentation (`dropout`).
            dtype: Computation dtype.
            param_dtype: Parameter dtype.
            sharding: Parameter and activation specs, used only under a mesh (`jax.set_mesh`).
            num_classes: Add a `[CLS, mean(patches)]` linear classifier with this many classes.
            id2label: Class names (implies `num_classes=len(id2label)`), saved in `config.json`.
            do_classification: Build the head; None means "when there are classes".
            config: A complete `DINOv3Config`; when given, it replaces every architecture argument above.
            remat_policy: A `jax.checkpoint_policies` name; turns checkpointing on.
            scan_layers: Stacked, scanned blocks (default) or a python list of blocks.
        """
        if config is None:
            config = DINOv3Config(
                image_size=img_size,
                patch_size=patch_size,
                num_channels=in_channels,
                hidden_size=hidden_size,
                num_hidden_layers=num_layers,
                num_attention_heads=num_heads,
                intermediate_size=mlp_dim,
                num_register_tokens=num_register_tokens,
                rope_theta=rope_theta,
                layerscale_value=layer_scale_init,
                layer_norm_eps=layernorm_epsilon,
                hidden_act=hidden_act,
                use_gated_mlp=use_gated_mlp,
                use_patch_bias=use_patch_bias,
                key_bias=key_bias,
                num_labels=len(id2label) if id2label is not None else (num_classes or 0),
                id2label=id2label,
            )
        elif not isinstance(config, DINOv3Config):
            raise TypeError(f"DINOv3Model needs a DINOv3Config, got {type(config).__name__}")
        self._build(
            config,
            do_classification=do_classification,
            attention_fn=attention_fn,
            use_gradient_checkpointing=use_gradient_checkpointing,
            remat_policy=remat_policy,
            scan_layers=scan_layers,
            rngs=rngs,
            dtype=dtype,
            param_dtype=param_dtype,
            sharding=sharding,
        )

    @classmethod
    def from_config(
        cls,
        config: dict[str, Any] | DINOv3Config,
        *,
        rngs: nnx.Rngs | None = None,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        sharding: ShardingSpec | type | None = DINOv3Sharding,
        use_gradient_checkpointing: bool = False,
        attention_fn: Callable[..., Any] | None = None,
        do_classification: bool | None = None,
        remat_policy: str | None = None,
        scan_layers: bool = True,
    ) -> DINOv3Model:
        """A randomly initialised model (in eval mode) from an HF config dict or a `DINOv3Config`.

        With a dict the model is a backbone unless `do_classification=True` (transformers has no DINOv3
        classifier); with a `DINOv3Config`, its `num_labels` decides.
        """
        if not isinstance(config, DINOv3Config):
            do_classification = bool(do_classification)
            config = DINOv3Config.from_hf_dict(config)
        return cls(
            config=config,
            rngs=rngs,
            dtype=dtype,
            param_dtype=param_dtype,
            sharding=sharding,
            use_gradient_checkpointing=use_gradient_checkpointing,
            attention_fn=attention_fn,
            do_classification=do_classification,
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
        sharding: ShardingSpec | type | None = DINOv3Sharding,
        use_gradient_checkpointing: bool = False,
        attention_fn: Callable[..., Any] | None = None,
        *,
        num_classes: int | None = None,
        id2label: dict[int, str] | None = None,
        do_classification: bool | None = None,
        revision: str | None = None,
        token: str | bool | None = None,
        cache_dir: str | os.PathLike | None = None,
        remat_policy: str | None = None,
        scan_layers: bool = True,
        config: DINOv3Config | None = None,
    ) -> DINOv3Model:
        """Load a transformers DINOv3 ViT checkpoint strictly (`dinov3_vit`, on-disk or v5 names).

        Arguments as `DINOv2Model.from_pretrained`; the hub weights are gated (pass `token=` or set HF_TOKEN).
        `num_classes=` adds a new `[CLS, mean(patches)]` head; a folder saved by jimm with a head reloads it.
        """
        from ..pretrained import load_pretrained
        from .pretrained import FAMILY

        return load_pretrained(
            cls,
            FAMILY,
            model_name_or_path,
            prefer_pytorch=use_pytorch,
            config=config,
            rngs=rngs,
            num_classes=num_classes,
            id2label=id2label,
            do_classification=do_classification,
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
        """Write `config.json`, `model.safetensors` and `preprocessor_config.json` (atomically).

        The folder loads in transformers' `DINOv3ViTModel` with no missing or unexpected keys (a jimm head's
        `classifier.*` tensors aside, which transformers has no class for).
        """
        from ..pretrained import save_pretrained
        from .pretrained import FAMILY

        save_pretrained(self, FAMILY, save_directory, max_shard_size=max_shard_size, overwrite=overwrite)


__all__ = ["DINOv3Model"]
