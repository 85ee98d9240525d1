"""DINOv2Model: DINOv2 (plain, with registers, giant's SwiGLU), equal to transformers' `Dinov2Model`. Maths only.

"DINOv2: Learning Robust Visual Features without Supervision" (Oquab et al., 2023); registers from "Vision
Transformers Need Registers" (Darcet et al., 2023). Inputs are NHWC images of any size of at least one patch
(whole patches only, as transformers); the position embeddings are resampled as the checkpoint's family does
(`config.py`).

Dimension letters: B batch, T tokens (class, registers, patches), D width, C classes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from ...common.sharding import DINOv2Sharding, ShardingSpec
from ..backbone import BackboneModel
from .config import PLAIN, REGISTERS, DINOv2Config


class DINOv2Model(BackboneModel):
    """DINOv2 backbone: `model(x)` is the class token after the final LayerNorm `[B, D]` (HF `pooler_output`).

    With a head (`num_classes=`, or a `Dinov2ForImageClassification` checkpoint) `model(x)` is the logits of
    `Linear(2D, C)` on `[CLS, mean(patch tokens)]`. Positional arguments and defaults are the original jimm's
    (ViT-S/14 at 518 px); keyword-only arguments cover the rest of the HF config. `model.config` is the
    `DINOv2Config` it was built from.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 518,
        patch_size: int | tuple[int, int] = 14,
        in_channels: int = 3,
        hidden_size: int = 384,
        num_layers: int = 12,
        num_heads: int = 6,
        mlp_dim: int = 1536,
        layer_scale_init: float = 1.0,
        use_gradient_checkpointing: bool = False,
        attention_fn: Callable[..., Any] | None = None,
        rngs: nnx.Rngs | None = None,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        sharding: ShardingSpec | type | None = DINOv2Sharding,
        *,
        num_register_tokens: int = 0,
        use_swiglu_ffn: bool = False,
        qkv_bias: bool = True,
        layer_norm_eps: float = 1e-6,
        hidden_act: str = "gelu",
        interpolate_offset: float = 0.0,
        num_classes: int | None = None,
        id2label: dict[int, str] | None = None,
        do_classification: bool | None = None,
        config: DINOv2Config | None = None,
        remat_policy: str | None = None,
        scan_layers: bool = True,
    ) -> None:
        """Build a DINOv2 with random weights, in eval mode.

        Args:
            img_size: The native image size (an int or `(height, width)`): the position table's grid.
            patch_size: Patch size (an int or `(height, width)`).
            in_channels: Input channels.
            hidden_size: Token width D.
            num_layers: Number of blocks.
            num_heads: Attention heads.
            mlp_dim: MLP width `D * mlp_ratio` (a multiple of D); with `use_swiglu_ffn` the SwiGLU keeps two
                thirds of it, rounded up to a multiple of 8 (giant: 6144 -> 4096).
            layer_scale_init: LayerScale's initial value (`layerscale_value`).
            use_gradient_checkpointing: Rematerialise each block in the backward pass.
            attention_fn: Attention kernel `fn(q, k, v, *, mask=None, bias=None)`; None is jax.nn's XLA path.
            rngs: Random streams for init (`params`) and dropout (`dropout`); None means `nnx.Rngs(0)`.
            dtype: Computation dtype.
            param_dtype: Parameter dtype.
            sharding: Parameter and activation specs, used only under a mesh (`jax.set_mesh`).
            num_register_tokens: Register tokens (> 0 makes a `dinov2_with_registers` model: antialiased
                position resampling).
            use_swiglu_ffn: Giant's SwiGLU MLP.
            qkv_bias: Biases on the query, key and value projections.
            layer_norm_eps: LayerNorm epsilon.
            hidden_act: MLP activation (HF name) of the plain MLP.
            interpolate_offset: 0.1 resamples position embeddings as the original torch-hub models (and
                transformers 4.x) do; 0 as transformers 5 does.
            num_classes: Add a `[CLS, mean(patches)]` linear classifier with this many classes.
            id2label: Class names (implies `num_classes=len(id2label)`), saved in `config.json`.
            do_classification: Build the head; None means "when there are classes".
            config: A complete `DINOv2Config`; when given, it replaces every architecture argument above.
            remat_policy: A `jax.checkpoint_policies` name; turns checkpointing on.
            scan_layers: Stacked, scanned blocks (default) or a python list of blocks.
        """
        if config is None:
            ratio, rest = divmod(mlp_dim, hidden_size)
            if rest:
                raise ValueError(
                    f"mlp_dim={mlp_dim} is not a multiple of hidden_size={hidden_size}: DINOv2's MLP width is "
                    "hidden_size * an integer mlp_ratio (transformers' Dinov2Config)"
                )
            labels = len(id2label) if id2label is not None else (num_classes or 0)
            config = DINOv2Config(
                model_type=REGISTERS if num_register_tokens else PLAIN,
                hidden_size=hidden_size,
                num_hidden_layers=num_layers,
                num_attention_heads=num_heads,
                mlp_ratio=ratio,
                hidden_act=hidden_act,
                layer_norm_eps=layer_norm_eps,
                image_size=img_size,
                patch_size=patch_size,
                num_channels=in_channels,
                qkv_bias=qkv_bias,
                layerscale_value=layer_scale_init,
                use_swiglu_ffn=use_swiglu_ffn,
                num_register_tokens=num_register_tokens,
                interpolate_offset=interpolate_offset,
                num_labels=labels,
                id2label=id2label,
            )
        elif not isinstance(config, DINOv2Config):
            raise TypeError(f"DINOv2Model needs a DINOv2Config, got {type(config).__name__}")
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
        config: dict[str, Any] | DINOv2Config,
        *,
        rngs: nnx.Rngs | None = None,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        sharding: ShardingSpec | type | None = DINOv2Sharding,
        use_gradient_checkpointing: bool = False,
        attention_fn: Callable[..., Any] | None = None,
        do_classification: bool | None = None,
        remat_policy: str | None = None,
        scan_layers: bool = True,
    ) -> DINOv2Model:
        """A randomly initialised model (in eval mode) from an HF config dict or a `DINOv2Config`.

        With a dict, the head follows its `architectures` (`...ForImageClassification`) unless
        `do_classification` says otherwise; with a `DINOv2Config`, its `num_labels`.
        """
        if not isinstance(config, DINOv2Config):
            if do_classification is None:
                do_classification = any(a.endswith("ForImageClassification") for a in config.get("architectures") or ())
            config = DINOv2Config.from_hf_dict(config)
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
        sharding: ShardingSpec | type | None = DINOv2Sharding,
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
        config: DINOv2Config | None = None,
        interpolate_offset: float | None = None,
    ) -> DINOv2Model:
        """Load a DINOv2 checkpoint strictly: transformers' (`dinov2`, `dinov2_with_registers`, either head, v4
        or v5 names), or a torch-hub / timm state dict (a file, or a folder without config.json).

        Args:
            model_name_or_path: A folder, a weights file, or a hub repo id.
            use_pytorch: Prefer `pytorch_model.bin` over safetensors (needs torch).
            rngs: Random streams for a new head and dropout; None means `nnx.Rngs(0)`.
            dtype: Computation dtype.
            param_dtype: Parameter dtype; stored tensors are cast to it.
            sharding: Parameter specs, used under a mesh; each tensor is placed directly on its sharding.
            use_gradient_checkpointing: Rematerialise each block in the backward pass.
            attention_fn: Attention kernel; None is jax.nn's XLA path.
            num_classes: Replace the checkpoint's head with a new random one of this many classes.
            id2label: Class names for the new head (implies `num_classes=len(id2label)`).
            do_classification: Keep a classifier; None follows the checkpoint.
            revision: Passed to `huggingface_hub` for repo ids.
            token: Passed to `huggingface_hub` for repo ids.
            cache_dir: Passed to `huggingface_hub` for repo ids.
            remat_policy: A `jax.checkpoint_policies` name.
            scan_layers: Stacked, scanned blocks (default) or a python list of blocks.
            config: The architecture; None reads `config.json` or infers it from a torch-hub / timm file.
            interpolate_offset: Override the resampling offset (0.1: torch-hub legacy, 0: transformers 5).

        Returns:
            The model, in eval mode.
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
            config_changes=None if interpolate_offset is None else {"interpolate_offset": interpolate_offset},
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

        The folder loads in transformers' `Dinov2Model` / `Dinov2WithRegistersModel` (or the
        `...ForImageClassification` class, with a head) with no missing or unexpected keys.
        """
        from ..pretrained import save_pretrained
        from .pretrained import FAMILY

        save_pretrained(self, FAMILY, save_directory, max_shard_size=max_shard_size, overwrite=overwrite)


__all__ = ["DINOv2Model"]
